"""The fallback for kernels that cannot mount an overlay of /: forced here with `rootfs="bind"`.

The bootstrap's writes (/etc, /opt/spike, the login user's home, /var/log) stay in the host's own
directories; this machine's are untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import bootstrap_user_data, ec2, lab_settings, wait_for

from loadorch.lab.control import Lab
from loadorch.transport.connection import SshHost
from loadorch.transport.hostkeys import parse_console_fingerprints
from loadorch.transport.ssh import SshFleet


@pytest.fixture(scope="module")
def bind_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = lab_settings(tmp_path_factory.mktemp("lab") / "state", latency=False, regions=("eu-west-2",))
    settings = type(base)(**{**base.__dict__, "rootfs": "bind"})
    with Lab(settings) as lab:
        yield lab


def test_bind_fallback_keeps_the_bootstrap_off_this_machine(
    bind_lab: Lab, client_key: tuple[Path, str]
) -> None:
    lab = bind_lab
    assert lab.info.rootfs == "bind"
    marker = f"spike-lab-bind-{time.time_ns()}"
    user_data = bootstrap_user_data("lab-bind", "eu-west-2") + f"\necho from-the-host >/etc/{marker}\n"
    client = ec2(lab, "eu-west-2")
    client.import_key_pair(KeyName="k", PublicKeyMaterial=client_key[1].encode())
    instance = client.run_instances(ImageId="ami-1", MinCount=1, MaxCount=1, KeyName="k", UserData=user_data)[
        "Instances"
    ][0]
    try:
        pins = wait_for(
            lambda: parse_console_fingerprints(
                client.get_console_output(InstanceId=instance["InstanceId"]).get("Output", "")
            ),
            90,
            "host keys",
        )
        fleet = SshFleet(
            [
                SshHost(
                    name="h",
                    address=instance["PublicIpAddress"],
                    user="ec2-user",
                    key_path=client_key[0],
                    host_key_fingerprints=pins,
                )
            ]
        )
        try:
            out = fleet.run(
                f"id -un; cat /opt/spike/bootstrap-done; cat /etc/{marker}; grep -c emulated /var/log/spike-bootstrap.log"
            )["h"].stdout.split()
        finally:
            fleet.close()
        assert out[0] == "ec2-user" and out[2] == "from-the-host" and int(out[3]) >= 3
        own = lab.settings.state_dir / "hosts" / instance["InstanceId"] / "upper"
        assert (own / "etc" / marker).is_file() and (own / "opt" / "spike" / "bootstrap-done").is_file()
        for path in (f"/etc/{marker}", "/opt/spike/bootstrap-done", "/var/log/spike-bootstrap.log",
                     "/etc/security/limits.d/90-spike-injector.conf", "/etc/sysctl.d/90-spike-injector.conf"):  # fmt: skip
            assert not Path(path).exists(), path
        assert "ec2-user" not in Path("/etc/passwd").read_text()
    finally:
        client.terminate_instances(InstanceIds=[instance["InstanceId"]])
        lab.client.wait_for_hosts([instance["InstanceId"]], state="terminated", timeout_s=60)
