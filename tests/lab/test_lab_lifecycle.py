"""`spike lab up|status|hosts|fail-apply|down` as a user types them; `down` after a killed daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import free_port, lab_links, lab_settings, netns_names, wait_for
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.lab.control import LabClient, MachineTurn, lab_up
from loadorch.lab.state import LabPaths


@pytest.fixture(autouse=True)
def _turn() -> Iterator[None]:
    """These tests start and kill labs by hand: they take the machine's lab turn as `Lab` does."""
    with MachineTurn():
        yield


def spike(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def guest_processes(state_dir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"loadorch.lab.guest" in cmdline and str(state_dir).encode() in cmdline:
                found.append(int(proc.name))
    return found


def test_cli_up_status_hosts_fail_apply_down(tmp_path: Path, client_key: tuple[Path, str]) -> None:
    state = tmp_path / "lab"
    port = free_port()
    code, out = spike(
        "lab", "up", "--state-dir", str(state), "--port", str(port), "--regions", "eu-west-2,us-east-1",
        "--no-latency", "--target-port", "18080",
    )  # fmt: skip
    try:
        assert code == 0, out
        endpoint = f"http://127.0.0.1:{port}"
        assert f"moto endpoint   {endpoint}" in out
        assert "AWS_ACCESS_KEY_ID=testing" in out and "AWS_DEFAULT_REGION=eu-west-2" in out
        assert "http://target.spike-lab.test:18080" in out and "allow_hosts: [target.spike-lab.test]" in out
        assert (
            f"spike run --provider aws --aws-endpoint {endpoint} --operator-cidr 198.18.0.1/32 "
            "--regions eu-west-2,us-east-1" in out
        )
        assert Path("/proc/sys/net/ipv4/conf/spklab0/forwarding").read_text().strip() == "0"

        client = boto3.client(
            "ec2", region_name="us-east-1", endpoint_url=endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        client.import_key_pair(KeyName="k", PublicKeyMaterial=client_key[1].encode())
        instance_id = client.run_instances(ImageId="ami-1", MinCount=1, MaxCount=1, KeyName="k")["Instances"][
            0
        ]["InstanceId"]
        LabClient(state).wait_for_hosts([instance_id])
        code, out = spike("lab", "status", "--state-dir", str(state))
        assert code == 0, out
        assert "region 1   eu-west-2" in out and "region 2   us-east-1" in out
        assert instance_id in out and "198.18.2.11" in out and "running" in out

        code, out = spike("lab", "hosts", "--state-dir", str(state))
        assert code == 0
        [host] = json.loads(out)
        assert (
            host["instance_id"] == instance_id
            and host["state"] == "running"
            and host["address"] == "198.18.2.11"
        )

        code, out = spike("lab", "fail-apply", "--region", "eu-west-2", "--state-dir", str(state))
        assert code == 0 and "InsufficientInstanceCapacity" in out
        code, out = spike("lab", "status", "--state-dir", str(state))
        assert "fail-apply: We currently do not have sufficient capacity in eu-west-2" in out
        code, out = spike("lab", "lose-hosts", "--region", "nowhere-1", "--state-dir", str(state))
        assert code != 0 and "the lab has no region 'nowhere-1'" in out
    finally:
        code, out = spike("lab", "down", "--state-dir", str(state))
    assert code == 0, out
    assert "stopped the lab daemon" in out
    assert [n for n in netns_names() if n.startswith("spkl")] == []
    assert lab_links() == []
    assert not state.exists()
    assert guest_processes(state) == []


def test_down_after_the_daemon_was_killed_sweeps_everything(
    tmp_path: Path, client_key: tuple[Path, str]
) -> None:
    settings = lab_settings(tmp_path / "lab", latency=False, regions=("eu-west-2", "us-east-1"))
    info = lab_up(settings)
    try:
        ids = []
        for region in ("eu-west-2", "us-east-1"):
            client = boto3.client(
                "ec2", region_name=region, endpoint_url=info.endpoint,
                aws_access_key_id="testing", aws_secret_access_key="testing",
            )  # fmt: skip
            client.import_key_pair(KeyName="k", PublicKeyMaterial=client_key[1].encode())
            ids.append(
                client.run_instances(ImageId="ami-1", MinCount=1, MaxCount=1, KeyName="k")["Instances"][0][
                    "InstanceId"
                ]
            )
        LabClient(settings.state_dir).wait_for_hosts(ids)
        in_hosts = [int(p) for i in ids for p in subprocess.run(
            ["ip", "netns", "pids", f"spkl-{i}"], capture_output=True, text=True, check=True
        ).stdout.split()]  # fmt: skip
        assert len(in_hosts) >= 4  # per host: unshare, its init, sshd
        daemon = info.pid
        os.kill(daemon, signal.SIGKILL)
        wait_for(
            lambda: not Path(f"/proc/{daemon}").exists() or _zombie(daemon), 30, "the killed daemon gone"
        )

        # the hosts outlive their daemon until the sweep
        code, out = spike("lab", "status", "--state-dir", str(settings.state_dir))
        assert code == 0 and "not running" in out
        assert f"leftover netns spkl-{ids[0]}" in out and "leftover link spklab0" in out
    finally:
        code, out = spike("lab", "down", "--state-dir", str(settings.state_dir))
    assert code == 0, out
    assert "removed leftover netns spkl-" in out and "removed leftover link spklab0" in out
    assert [n for n in netns_names() if n.startswith("spkl")] == []
    assert lab_links() == []
    assert [pid for pid in in_hosts if Path(f"/proc/{pid}").exists() and not _zombie(pid)] == []
    assert not LabPaths(settings.state_dir).root.exists()
    code, out = spike("lab", "down", "--state-dir", str(settings.state_dir))
    assert code == 0 and "no lab was running and nothing was left" in out


def test_up_refuses_when_this_machine_uses_the_lab_range(tmp_path: Path) -> None:
    dummy = "ltdummy0"  # not spkl*: to the lab it is someone else's (no dummy driver here: a bridge)
    subprocess.run(["ip", "link", "add", dummy, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.19.7.7/32", "dev", dummy], check=True)
        code, out = spike(
            "lab", "up", "--state-dir", str(tmp_path / "lab"), "--port", str(free_port()), "--no-latency"
        )
        assert code != 0
        assert "198.18.0.0/15" in out and "address 198.19.7.7/32 on ltdummy0" in out
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=False)
        spike("lab", "down", "--state-dir", str(tmp_path / "lab"))
    assert lab_links() == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
