"""Real Terraform with the real injector-fleet module against the lab: the instances it creates are
hosts spike can pin and reach, and `terraform destroy` leaves none.

Skips (saying why) unless terraform and a filesystem mirror of hashicorp/aws are on this machine.
"""

from __future__ import annotations

import ipaddress
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ec2, netns_names, wait_for

from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.lab.control import Lab
from loadorch.lab.network import OPERATOR_CIDR
from loadorch.providers.terraform.config import FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.runner import TerraformWorkspace
from loadorch.transport.connection import SshHost
from loadorch.transport.hostkeys import parse_console_fingerprints
from loadorch.transport.ssh import SshFleet

REGIONS = ("eu-west-2", "us-east-1")


@pytest.fixture(scope="module", autouse=True)
def _terraform() -> Iterator[None]:
    reason = None
    if shutil.which("terraform") is None:
        reason = "terraform not found: `spike doctor` shows what is missing"
    elif not terraform_aws_provider_mirrors():
        reason = "no filesystem mirror holds the hashicorp/aws provider: `spike doctor` shows what is missing"
    if reason:
        print(f"\nlab terraform test skipped: {reason}")
        pytest.skip(reason)
    yield


def test_terraform_apply_makes_reachable_hosts_and_destroy_removes_them(
    tmp_path: Path, lab: Lab, client_key: tuple[Path, str]
) -> None:
    run_id = "lab-tf-1"
    spec = FleetSpec(
        run_id=run_id,
        owner="sre@example.com",
        expires_at="2030-01-01T00:00:00Z",
        ttl_minutes=60,
        regions=tuple(RegionFleet(region, 1, "t3.micro") for region in REGIONS),
        operator_cidr=OPERATOR_CIDR,
        ssh_public_key=client_key[1],
        module_source=injector_fleet_module(),
        endpoint=lab.endpoint,
    )
    workspace = TerraformWorkspace(tmp_path / "terraform", lab.env)
    workspace.write_config(spec)
    started = time.monotonic()
    fleet: SshFleet | None = None
    try:
        workspace.init()
        workspace.apply()
        applied_s = time.monotonic() - started
        inventory = workspace.inventory()
        assert [h.injector_id for h in inventory.hosts] == ["eu-west-2-1", "us-east-1-1"]
        hosts = []
        for number, host in enumerate(inventory.hosts, start=1):
            assert ipaddress.ip_address(host.public_ip) in ipaddress.ip_network(f"198.18.{number}.0/24")
            client = ec2(lab, host.region)
            pins = wait_for(
                lambda c=client, i=host.instance_id: parse_console_fingerprints(
                    c.get_console_output(InstanceId=i).get("Output", "")
                ),
                120,
                f"host keys of {host.injector_id}",
                interval_s=0.5,
            )
            hosts.append(
                SshHost(
                    name=host.injector_id,
                    address=host.address,
                    user="ec2-user",
                    key_path=client_key[0],
                    host_key_fingerprints=pins,
                )
            )
        fleet = SshFleet(hosts, command_timeout_s=60)
        results = fleet.run(
            "id -un; cat /opt/spike/bootstrap-done && test -w /opt/spike/results && echo writable"
        )
        ready_s = time.monotonic() - started
        print(
            f"\n2 regions x 1: apply {applied_s:.1f} s, SSH-ready and bootstrapped {ready_s:.1f} s after apply start"
        )
        for result in results.values():
            lines = result.stdout.split()
            assert lines[0] == "ec2-user" and lines[-1] == "writable"
        lab_hosts = {h.instance_id: h for h in lab.client.hosts()}
        assert {lab_hosts[h.instance_id].address for h in inventory.hosts} == {
            h.public_ip for h in inventory.hosts
        }
        assert all(lab_hosts[h.instance_id].shutdown_behaviour == "terminate" for h in inventory.hosts)
        assert all(lab_hosts[h.instance_id].user_data_exit == 0 for h in inventory.hosts)
    finally:
        if fleet is not None:
            fleet.close()
        workspace.destroy()
    ids = [h.instance_id for h in inventory.hosts]
    lab.client.wait_for_hosts(ids, state="terminated", timeout_s=60)
    assert not {f"spkl-{i}" for i in ids} & set(netns_names())
    assert all(not (lab.settings.state_dir / "hosts" / i).exists() for i in ids)
