"""Real Terraform and the real hashicorp/aws provider against a real moto server on loopback.

Nothing here can reach AWS: every provider has all its endpoints pointed at moto, the credentials
are moto's fake ones, and the test skips unless Terraform can install the provider from a
filesystem mirror (no network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadorch.cloud.tags import run_tags
from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.errors import RunInterrupted
from loadorch.providers.terraform.config import FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.runner import (
    TerraformApplyError,
    TerraformWorkspace,
    cli_config_text,
    find_plugin_mirror,
)

if shutil.which("terraform") is None:
    pytest.skip("terraform not found: `spike doctor` shows what is missing", allow_module_level=True)
if not terraform_aws_provider_mirrors():
    pytest.skip(
        "no filesystem mirror holds the hashicorp/aws provider: `spike doctor` shows what is missing",
        allow_module_level=True,
    )

from moto_server import MotoServer

REPO = Path(__file__).resolve().parents[2]
OPERATOR_CIDR = "203.0.113.7/32"
OWNER = "sre@example.com"
EXPIRES_AT = "2030-01-01T00:00:00Z"
TWO_REGIONS = (RegionFleet("eu-west-2", 2, "t3.micro"), RegionFleet("us-east-1", 1, "t3.micro"))
REGIONS = tuple(fleet.region for fleet in TWO_REGIONS)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    text = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{text} spike-test"


def fleet_spec(run_id: str, endpoint: str, public_key: str) -> FleetSpec:
    return FleetSpec(
        run_id=run_id,
        owner=OWNER,
        expires_at=EXPIRES_AT,
        ttl_minutes=60,
        regions=TWO_REGIONS,
        operator_cidr=OPERATOR_CIDR,
        ssh_public_key=public_key,
        module_source=injector_fleet_module(),
        endpoint=endpoint,
    )


def workspace_for(tmp_path: Path, moto: MotoServer, run_id: str, public_key: str) -> TerraformWorkspace:
    workspace = TerraformWorkspace(tmp_path / "terraform", moto.env)
    workspace.write_config(fleet_spec(run_id, moto.endpoint, public_key))
    workspace.init()
    return workspace


def instances(moto: MotoServer, region: str, run_id: str, *, live_only: bool = True) -> list[dict[str, Any]]:
    filters = [{"Name": "tag:SpikeRunId", "Values": [run_id]}]
    if live_only:
        filters.append(
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
        )
    pages = moto.client("ec2", region).describe_instances(Filters=filters)["Reservations"]
    return [instance for page in pages for instance in page["Instances"]]


def leftovers(moto: MotoServer, run_id: str) -> list[str]:
    """Everything still carrying the run id in any region (terminated instances do not count)."""
    found = []
    tagged = [{"Name": "tag:SpikeRunId", "Values": [run_id]}]
    for region in REGIONS:
        ec2 = moto.client("ec2", region)
        found += [f"{region} instance {i['InstanceId']}" for i in instances(moto, region, run_id)]
        found += [f"{region} volume {v['VolumeId']}" for v in ec2.describe_volumes(Filters=tagged)["Volumes"]]
        groups = ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]
        found += [f"{region} security group {g['GroupId']}" for g in groups]
        found += [
            f"{region} key pair {k['KeyName']}" for k in ec2.describe_key_pairs(Filters=tagged)["KeyPairs"]
        ]
    return found


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def test_module_is_formatted_and_valid(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": str(tmp_path / "terraform.rc"),
    }
    (tmp_path / "terraform.rc").write_text(cli_config_text(find_plugin_mirror(), None))
    fmt = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-no-color", str(REPO / "terraform")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert fmt.returncode == 0, f"not formatted: {fmt.stdout}{fmt.stderr}"
    # Validate copies: init writes .terraform/ and a lock file next to the configuration.
    copy = tmp_path / "terraform"
    shutil.copytree(REPO / "terraform", copy, ignore=shutil.ignore_patterns(".terraform*"))
    for directory in (copy / "modules" / "injector-fleet", copy / "examples" / "two-regions"):
        for argv in (
            ["terraform", "init", "-backend=false", "-input=false", "-no-color"],
            ["terraform", "validate", "-no-color"],
        ):
            done = subprocess.run(argv, cwd=directory, capture_output=True, text=True, env=env, check=False)
            assert done.returncode == 0, f"{' '.join(argv)} in {directory.name}: {done.stdout}{done.stderr}"


def test_apply_two_regions_then_destroy_leaves_nothing(
    tmp_path: Path, moto: MotoServer, public_key: str
) -> None:
    run_id = "it-apply-1"
    workspace = workspace_for(tmp_path, moto, run_id, public_key)
    events: list[tuple[str, str, str]] = []
    try:
        run = workspace.apply(lambda *event: events.append(event))
        assert run.returncode == 0
        assert "Apply complete! Resources: 7 added" in run.summary
        for region in REGIONS:
            assert (region, "apply_complete") in {(e[0], e[1]) for e in events if "aws_instance" in e[2]}

        inventory = workspace.inventory()
        assert [host.injector_id for host in inventory.hosts] == ["eu-west-2-1", "eu-west-2-2", "us-east-1-1"]
        for fleet in TWO_REGIONS:
            ec2 = moto.client("ec2", fleet.region)
            found = instances(moto, fleet.region, run_id)
            assert len(found) == fleet.instance_count
            assert {i["InstanceId"] for i in found} == {
                h.instance_id for h in inventory.region(fleet.region).hosts
            }
            expected_tags = run_tags(run_id, OWNER, EXPIRES_AT, fleet.region)
            for instance in found:
                assert instance["State"]["Name"] == "running"
                assert instance["InstanceType"] == "t3.micro"
                assert tags_of(instance).items() >= expected_tags.items()
                assert instance["MetadataOptions"]["HttpTokens"] == "required"
                behaviour = ec2.describe_instance_attribute(
                    InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
                )
                assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
                volumes = ec2.describe_volumes(
                    Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}]
                )["Volumes"]
                assert volumes and all(v["Encrypted"] for v in volumes)
                assert all(tags_of(v).items() >= expected_tags.items() for v in volumes)
            host = next(h for h in inventory.hosts if h.region == fleet.region)
            match = next(i for i in found if i["InstanceId"] == host.instance_id)
            assert (host.public_ip, host.private_ip) == (match["PublicIpAddress"], match["PrivateIpAddress"])

            groups = ec2.describe_security_groups(GroupIds=[inventory.region(fleet.region).security_group_id])
            group = groups["SecurityGroups"][0]
            assert tags_of(group).items() >= expected_tags.items()
            ingress = [
                (
                    p["IpProtocol"],
                    p.get("FromPort"),
                    p.get("ToPort"),
                    [r["CidrIp"] for r in p["IpRanges"]],
                    p["Ipv6Ranges"],
                )
                for p in group["IpPermissions"]
            ]
            assert ingress == [("tcp", 22, 22, [OPERATOR_CIDR], [])]
            # moto lists the groups of a provider-launched instance on its network interface only
            attached = {
                g["GroupId"]
                for i in found
                for g in [
                    *i.get("SecurityGroups", []),
                    *(g for n in i["NetworkInterfaces"] for g in n["Groups"]),
                ]
            }
            assert attached == {group["GroupId"]}

            keys = ec2.describe_key_pairs(KeyNames=[f"spike-{run_id}-{fleet.region}"])["KeyPairs"]
            assert len(keys) == 1 and tags_of(keys[0]).items() >= expected_tags.items()
            assert {i["KeyName"] for i in found} == {keys[0]["KeyName"]}

        # Credentials live in the environment of the Terraform process only, never in a file.
        for written in ("main.tf.json", "terraform.rc", "terraform.tfstate", "terraform-apply.log"):
            text = (workspace.workdir / written).read_text()
            assert moto.env["AWS_SECRET_ACCESS_KEY"] not in text, written
    finally:
        workspace.destroy()
    assert leftovers(moto, run_id) == []
    assert len(instances(moto, "eu-west-2", run_id, live_only=False)) in (0, 2)  # terminated or gone


def test_failed_apply_in_one_region_names_it_and_destroy_cleans_both(
    tmp_path: Path, moto: MotoServer, public_key: str
) -> None:
    # The forced failure is real and happens at apply time in us-east-1 only: a key pair with the
    # name the module will import already exists there (created here, untagged, the way a leftover
    # of an earlier run with the same id would), so EC2 answers ImportKeyPair with
    # InvalidKeyPair.Duplicate. Plan succeeds (names are not checked until the call), eu-west-2
    # creates everything, us-east-1 gets its security group but no instances.
    run_id = "it-fail-1"
    clash = f"spike-{run_id}-us-east-1"
    us_east = moto.client("ec2", "us-east-1")
    us_east.import_key_pair(KeyName=clash, PublicKeyMaterial=public_key.encode())
    try:
        workspace = workspace_for(tmp_path, moto, run_id, public_key)
        try:
            with pytest.raises(TerraformApplyError) as info:
                workspace.apply()
            error = info.value
            assert error.regions == ["us-east-1"]
            assert "terraform apply failed in us-east-1" in error.message
            assert "InvalidKeyPair.Duplicate" in error.message
            assert error.where == "us-east-1"
            # the other region went ahead: its fleet exists until destroy
            assert len(instances(moto, "eu-west-2", run_id)) == 2
            assert instances(moto, "us-east-1", run_id) == []
            assert any("us-east-1 security group" in item for item in leftovers(moto, run_id))
        finally:
            workspace.destroy()
        assert leftovers(moto, run_id) == []
        # destroy removes what Terraform created, never the key pair it failed to import
        assert us_east.describe_key_pairs(KeyNames=[clash])["KeyPairs"]
    finally:
        us_east.delete_key_pair(KeyName=clash)


def test_interrupted_apply_saves_state_and_destroy_cleans_up(
    tmp_path: Path, moto: MotoServer, public_key: str
) -> None:
    run_id = "it-interrupt-1"
    workspace = workspace_for(tmp_path, moto, run_id, public_key)
    creating = threading.Event()
    errors: list[BaseException] = []

    def progress(region: str, event: str, detail: str) -> None:
        if event == "apply_start" and detail.startswith("aws_instance."):
            creating.set()

    def apply() -> None:
        try:
            workspace.apply(progress)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=apply, name="apply")
    thread.start()
    try:
        assert creating.wait(120), "no instance creation started"
        assert workspace.terminate(grace_s=120) is True
        thread.join(60)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], RunInterrupted), errors
        run = workspace.runs[-1]
        assert run.verb == "apply" and run.interrupted and run.returncode != 0
        # Terraform stopped on its own terms: state written, lock released
        assert workspace.state_path.is_file()
        assert not (workspace.workdir / ".terraform.tfstate.lock.info").exists()
        assert "aws_instance" in workspace.state_path.read_text()  # the instances in flight are in the state
    finally:
        thread.join(120)
        workspace.destroy()
    assert leftovers(moto, run_id) == []
