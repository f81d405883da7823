"""EC2 instances become real hosts: boto3 against the lab's moto, SSH into what it made.

Each test launches its own instances and terminates them; the module's lab is shared.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from conftest import bootstrap_user_data, ec2, lab_links, netns_names, wait_for

from loadorch.lab.control import Lab
from loadorch.transport.connection import SshHost
from loadorch.transport.hostkeys import parse_console_fingerprints
from loadorch.transport.ssh import SshFleet

AMI = "ami-12c6146b"  # any id: moto does not check it


def launch(
    lab: Lab,
    region: str,
    key: tuple[Path, str],
    *,
    user_data: str | None,
    key_name: str,
    behaviour: str = "terminate",
    count: int = 1,
) -> list[dict[str, Any]]:
    client = ec2(lab, region)
    try:
        client.import_key_pair(KeyName=key_name, PublicKeyMaterial=key[1].encode())
    except botocore.exceptions.ClientError as exc:
        if "Duplicate" not in str(exc):
            raise
    args: dict[str, Any] = {
        "ImageId": AMI,
        "MinCount": count,
        "MaxCount": count,
        "KeyName": key_name,
        "InstanceType": "t3.micro",
        "InstanceInitiatedShutdownBehavior": behaviour,
    }
    if user_data is not None:
        args["UserData"] = user_data
    return list(client.run_instances(**args)["Instances"])


def console_fingerprints(lab: Lab, region: str, instance_id: str) -> tuple[str, ...]:
    answer = ec2(lab, region).get_console_output(InstanceId=instance_id)
    return parse_console_fingerprints(answer.get("Output", ""))


def wait_for_keys(lab: Lab, region: str, instance_id: str, timeout_s: float = 90.0) -> tuple[str, ...]:
    return tuple(
        wait_for(
            lambda: console_fingerprints(lab, region, instance_id), timeout_s, f"host keys of {instance_id}"
        )
    )


def fleet(address: str, key: Path, pins: tuple[str, ...], user: str = "ec2-user") -> SshFleet:
    host = SshHost(name="lab-host", address=address, user=user, key_path=key, host_key_fingerprints=pins)
    return SshFleet([host], connect_timeout_s=10, command_timeout_s=60)


def ssh(address: str, key: Path, pins: tuple[str, ...], command: str) -> str:
    connection = fleet(address, key, pins)
    try:
        result = connection.run(command)["lab-host"]
    finally:
        connection.close()
    return result.stdout


def keyscan_fingerprints(address: str) -> set[str]:
    """What OpenSSH's own tools see on the host's port 22."""
    scan = subprocess.run(["ssh-keyscan", "-T", "10", address], capture_output=True, text=True, check=True)
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"],
        input=scan.stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split()[1] for line in listed.stdout.splitlines() if line.strip()}


def terminate(lab: Lab, region: str, instance_ids: list[str]) -> None:
    ec2(lab, region).terminate_instances(InstanceIds=instance_ids)
    lab.client.wait_for_hosts(instance_ids, state="terminated", timeout_s=60)


def test_run_instances_boots_a_host_that_spike_can_pin_and_reach(
    lab: Lab, client_key: tuple[Path, str]
) -> None:
    started = time.monotonic()
    [instance] = launch(
        lab, "eu-west-2", client_key, user_data=bootstrap_user_data("lab-t1", "eu-west-2"), key_name="k-t1"
    )
    instance_id = instance["InstanceId"]
    try:
        address = instance["PublicIpAddress"]
        assert ipaddress.ip_address(address) in ipaddress.ip_network("198.18.1.0/24"), address
        described = ec2(lab, "eu-west-2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]
        assert described["Instances"][0]["PublicIpAddress"] == address

        pins = wait_for_keys(lab, "eu-west-2", instance_id)
        keys_after_s = time.monotonic() - started
        print(f"\nRunInstances -> host keys on the console: {keys_after_s:.2f} s")
        assert len(pins) == 2  # ECDSA and ed25519, both printed in both blocks
        assert keyscan_fingerprints(address) == set(pins)

        # spike's own pinned SSH path, as the aws provider uses it, logging in as the image's user
        out = ssh(
            address,
            client_key[0],
            pins,
            "id -un; hostname; cat /opt/spike/bootstrap-done; stat -c %U /opt/spike; "
            "cat /var/log/spike-bootstrap.log; java -version 2>&1 | head -n 1; python3 -c 'print(6*7)'; "
            "tar --version | head -n 1; gzip --version | head -n 1; "
            "getent hosts target.spike-lab.test; cat /proc/sys/net/ipv4/ip_local_port_range",
        )
        lines = out.splitlines()
        assert lines[0] == "ec2-user"
        assert lines[1] == "ip-" + address.replace(".", "-")
        assert lines[2].startswith("20") and lines[2].endswith("Z")  # the bootstrap's done marker
        assert lines[3] == "ec2-user"
        assert "spike bootstrap done" in out
        assert "install java-17-amazon-corretto-headless: emulated" in out
        assert "fs.file-max = 2097152: skipped, machine-wide" in out
        assert "net.ipv4.tcp_tw_reuse = 1: applied in this host's network namespace" in out
        assert "power-off scheduled for" in out
        assert "openjdk version" in out and "42" in lines
        assert "(GNU tar)" in out and "gzip 1." in out
        assert (
            "198.18.1.1      target.spike-lab.test" in out
            or "198.18.1.1 target.spike-lab.test" in " ".join(out.split())
        )
        assert lines[-1].split() == ["1025", "65535"]  # a per-namespace sysctl, really applied there

        host = lab.client.host(instance_id)
        assert (
            host is not None and host.state == "running" and host.bootstrap_done and host.user_data_exit == 0
        )
        assert host.ttl_at is not None and abs(host.ttl_at - (time.time() + 3600)) < 120  # shutdown -h +60
    finally:
        terminate(lab, "eu-west-2", [instance_id])


def test_a_host_cannot_change_this_machine(lab: Lab, client_key: tuple[Path, str]) -> None:
    marker = f"spike-lab-containment-{time.time_ns()}"
    user_data = f"#!/bin/bash\necho written-by-the-host >/etc/{marker}\necho x >/usr/local/{marker}\n"
    [instance] = launch(lab, "eu-west-2", client_key, user_data=user_data, key_name="k-t2")
    instance_id = instance["InstanceId"]
    try:
        pins = wait_for_keys(lab, "eu-west-2", instance_id)
        assert (
            ssh(instance["PublicIpAddress"], client_key[0], pins, f"cat /etc/{marker}").strip()
            == "written-by-the-host"
        )
        assert not Path(f"/etc/{marker}").exists()
        assert not Path(f"/usr/local/{marker}").exists()
        upper = lab.settings.state_dir / "hosts" / instance_id / "upper"
        assert (upper / "etc" / marker).read_text() == "written-by-the-host\n"
        # the login user and the fresh host keys exist only inside the host
        assert "ec2-user" not in Path("/etc/passwd").read_text()
        assert (upper / "etc" / "ssh" / "ssh_host_ed25519_key").is_file()
        # a host cannot read the lab's state (other hosts' keys) through its copy of this machine
        listing = ssh(
            instance["PublicIpAddress"], client_key[0], pins, f"ls -A {lab.settings.state_dir} | wc -l"
        )
        assert listing.strip() == "0"
    finally:
        terminate(lab, "eu-west-2", [instance_id])
    assert not (lab.settings.state_dir / "hosts" / instance_id).exists()


def test_terminate_removes_the_host_and_its_namespace(lab: Lab, client_key: tuple[Path, str]) -> None:
    instances = launch(lab, "us-east-1", client_key, user_data=None, key_name="k-t3", count=2)
    ids = [i["InstanceId"] for i in instances]
    hosts = lab.client.wait_for_hosts(ids, timeout_s=90)
    assert {h.address for h in hosts} == {i["PublicIpAddress"] for i in instances}
    assert all(ipaddress.ip_address(h.address) in ipaddress.ip_network("198.18.2.0/24") for h in hosts)
    assert {f"spkl-{i}" for i in ids} <= set(netns_names())
    pids = [int(p) for i in ids for p in subprocess.run(
        ["ip", "netns", "pids", f"spkl-{i}"], capture_output=True, text=True, check=True
    ).stdout.split()]  # fmt: skip
    assert pids
    terminate(lab, "us-east-1", ids)
    assert not {f"spkl-{i}" for i in ids} & set(netns_names())
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert [link for link in lab_links() if link.startswith("spkl2h")] == []
    states = ec2(lab, "us-east-1").describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"]
    assert {i["State"]["Name"] for i in states} == {"terminated"}


def test_the_ttl_power_off_terminates_the_instance_in_moto(lab: Lab, client_key: tuple[Path, str]) -> None:
    # The bootstrap's TTL path (`shutdown -h +N`), with N = 0 minutes so that the test does not wait an hour.
    user_data = "#!/bin/bash\nshutdown -h +0 'spike TTL reached' >>/var/log/ttl.log 2>&1\n"
    [kept] = launch(lab, "eu-west-2", client_key, user_data=user_data, key_name="k-t4", behaviour="stop")
    [gone] = launch(lab, "eu-west-2", client_key, user_data=user_data, key_name="k-t4", behaviour="terminate")
    client = ec2(lab, "eu-west-2")

    def state(instance_id: str) -> str:
        return str(
            client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
                "Name"
            ]
        )

    wait_for(lambda: state(gone["InstanceId"]) == "terminated", 90, "the powered-off instance terminated")
    wait_for(
        lambda: state(kept["InstanceId"]) == "stopped",
        90,
        "the powered-off instance (behaviour stop) stopped",
    )
    hosts = {h.instance_id: h for h in lab.client.hosts()}
    wait_for(
        lambda: lab.client.host(kept["InstanceId"]).state == "stopped", 30, "host of the stopped instance"
    )  # type: ignore[union-attr]
    assert "powered itself off (spike TTL reached)" in hosts[gone["InstanceId"]].note
    assert f"spkl-{gone['InstanceId']}" not in netns_names()
    client.terminate_instances(InstanceIds=[kept["InstanceId"]])


def test_lose_hosts_kills_a_region_while_moto_still_lists_it(lab: Lab, client_key: tuple[Path, str]) -> None:
    instances = launch(lab, "us-east-1", client_key, user_data=None, key_name="k-t5", count=2)
    ids = [i["InstanceId"] for i in instances]
    try:
        lab.client.wait_for_hosts(ids, timeout_s=90)
        pins = wait_for_keys(lab, "us-east-1", ids[0])
        assert ssh(instances[0]["PublicIpAddress"], client_key[0], pins, "echo up").strip() == "up"
        assert sorted(lab.client.lose_hosts("us-east-1")) == sorted(ids)
        assert not {f"spkl-{i}" for i in ids} & set(netns_names())
        assert {h.state for h in lab.client.hosts() if h.instance_id in ids} == {"lost"}
        described = ec2(lab, "us-east-1").describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"]
        assert {i["State"]["Name"] for i in described} == {"running"}  # as if the zone died unseen
        with pytest.raises(OSError):
            import socket

            socket.create_connection((instances[0]["PublicIpAddress"], 22), timeout=3).close()
    finally:
        terminate(lab, "us-east-1", ids)


def test_fail_apply_makes_run_instances_fail_until_cleared(lab: Lab, client_key: tuple[Path, str]) -> None:
    lab.client.fail_apply("eu-west-2", message="no capacity in the test")
    try:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            launch(lab, "eu-west-2", client_key, user_data=None, key_name="k-t6")
        assert info.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
        assert info.value.response["Error"]["Message"] == "no capacity in the test"
        # the other region is not affected
        [other] = launch(lab, "us-east-1", client_key, user_data=None, key_name="k-t6")
        terminate(lab, "us-east-1", [other["InstanceId"]])
    finally:
        lab.client.clear_fail_apply("eu-west-2")
    [instance] = launch(lab, "eu-west-2", client_key, user_data=None, key_name="k-t6")
    terminate(lab, "eu-west-2", [instance["InstanceId"]])


def test_console_is_base64_on_the_wire_as_ec2_sends_it(lab: Lab, client_key: tuple[Path, str]) -> None:
    [instance] = launch(lab, "eu-west-2", client_key, user_data=None, key_name="k-t7")
    instance_id = instance["InstanceId"]
    try:
        pins = wait_for_keys(lab, "eu-west-2", instance_id)
        # botocore decodes the console for boto3 callers; Terraform and the AWS CLI get it raw
        client = ec2(lab, "eu-west-2")
        raw: dict[str, Any] = {}
        client.meta.events.register(
            "after-call.ec2.GetConsoleOutput",
            lambda http_response, **_: raw.update(body=http_response.content),
            unique_id="raw-console",
        )
        client.get_console_output(InstanceId=instance_id)
        body = raw["body"].decode()
        encoded = body.split("<output>")[1].split("</output>")[0]
        text = base64.b64decode(encoded, validate=True).decode()
        assert parse_console_fingerprints(text) == pins
        assert (
            "-----BEGIN SSH HOST KEY KEYS-----" in text
            and "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----" in text
        )
    finally:
        terminate(lab, "eu-west-2", [instance_id])


def test_console_is_empty_until_the_host_has_booted(lab: Lab, client_key: tuple[Path, str]) -> None:
    # user_data that waits for a file in the host's own /tmp: the host is up (sshd answers) but
    # cloud-init's final stage, which prints the keys, has not come yet.
    user_data = "#!/bin/bash\nwhile [ ! -f /tmp/go ]; do sleep 0.05; done\necho released\n"
    [instance] = launch(lab, "eu-west-2", client_key, user_data=user_data, key_name="k-t8")
    instance_id = instance["InstanceId"]
    try:
        wait_for(lambda: (h := lab.client.host(instance_id)) is not None and h.sshd, 90, "sshd of the host")
        answer = ec2(lab, "eu-west-2").get_console_output(InstanceId=instance_id)
        assert "Output" not in answer
        assert lab.client.host(instance_id).state == "booting"  # type: ignore[union-attr]
        status = json.loads((lab.settings.state_dir / "hosts" / instance_id / "status.json").read_text())
        Path(f"/proc/{status['outer_pid']}/root/tmp/go").write_text("")  # into the host's own /tmp
        pins = wait_for_keys(lab, "eu-west-2", instance_id)
        assert len(pins) == 2
        text = ec2(lab, "eu-west-2").get_console_output(InstanceId=instance_id)["Output"]
        assert text.index("released") < text.index("-----BEGIN SSH HOST KEY FINGERPRINTS-----")
        assert "user_data exited with 0" in text
        assert lab.client.host(instance_id).state == "running"  # type: ignore[union-attr]
    finally:
        terminate(lab, "eu-west-2", [instance_id])


def test_an_unknown_region_gets_the_next_number(lab: Lab, client_key: tuple[Path, str]) -> None:
    # the lab was started with eu-west-2 and us-east-1: ap-south-1 becomes region 3 on first use
    [instance] = launch(lab, "ap-south-1", client_key, user_data=None, key_name="k-t9")
    try:
        assert instance["PublicIpAddress"].startswith("198.18.3.")
        regions = {r.name: r for r in lab.client.info().regions}
        assert (regions["ap-south-1"].number, regions["ap-south-1"].edge) == (3, "198.18.3.1")
        pins = wait_for_keys(lab, "ap-south-1", instance["InstanceId"])
        hosts_line = ssh(
            instance["PublicIpAddress"], client_key[0], pins, "getent hosts target.spike-lab.test"
        )
        assert hosts_line.split()[0] == "198.18.3.1"
    finally:
        terminate(lab, "ap-south-1", [instance["InstanceId"]])
