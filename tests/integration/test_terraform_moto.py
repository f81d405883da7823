"""Real Terraform and the real hashicorp/aws provider against a real moto server on loopback.

Nothing here can reach AWS: every provider has all its endpoints pointed at moto, the credentials
are moto's fake ones, and the test skips unless Terraform can install the provider from a
filesystem mirror (no network).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loadorch.cloud.tags import run_tags
from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.errors import RunInterrupted
from loadorch.providers.terraform.config import AssumeRole, FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.runner import (
    TerraformApplyError,
    TerraformWorkspace,
    cli_config_text,
    find_plugin_mirror,
)
from loadorch.providers.terraform.ui import RESOURCES_EVENT

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
    root = tmp_path_factory.mktemp("moto")
    # moto's request recorder (started and stopped by the tests that read it) writes here
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_RECORDER_FILEPATH", str(root / "recording.jsonl"))
        with MotoServer(root) as server:
            yield server


def recorder(moto: MotoServer, verb: str) -> bytes:
    request = urllib.request.Request(
        f"{moto.endpoint}/moto-api/recorder/{verb}", method="POST" if verb != "download-recording" else "GET"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bytes(answer.read())


def public_ip_requests(recording: bytes) -> dict[str, set[str]]:
    """Region -> the AssociatePublicIpAddress values its RunInstances calls carried."""
    found: dict[str, set[str]] = {}
    for line in recording.decode().splitlines():
        entry = json.loads(line)
        body = (
            base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry.get("body") or ""
        )
        params = urllib.parse.parse_qs(body)
        if params.get("Action") != ["RunInstances"]:
            continue
        scope = re.search(
            r"Credential=[^/]+/\d+/([a-z0-9-]+)/ec2/", entry["headers"].get("Authorization", "")
        )
        region = scope.group(1) if scope else "?"
        found.setdefault(region, set()).update(
            params.get("NetworkInterface.1.AssociatePublicIpAddress", ["unset"])
        )
    return found


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


# The target at 198.51.100.0/24 on 443 and 8080 (198.51.100.0/24 is a documentation range: nothing
# is ever sent there, the rules only exist in moto).
TARGET_PORTS = (443, 8080)
TARGET_CIDRS = ("198.51.100.0/24",)
EXPECTED_EGRESS = {
    # the target's ports; 443 is shared with the bootstrap's package repositories
    ("tcp", 443, ("0.0.0.0/0", "198.51.100.0/24"), ("::/0",)),
    ("tcp", 8080, ("198.51.100.0/24",), ()),
    ("tcp", 80, ("0.0.0.0/0",), ("::/0",)),
    ("udp", 123, ("169.254.169.123/32",), ()),
}


def egress_rules(group: dict[str, Any]) -> set[tuple[str, int, tuple[str, ...], tuple[str, ...]]]:
    """(protocol, port, IPv4 CIDRs, IPv6 CIDRs) of each egress rule; port -1 for "all" (none expected)."""
    rules = set()
    for p in group["IpPermissionsEgress"]:
        assert p.get("FromPort", -1) == p.get("ToPort", -1), p  # one port per rule
        ipv4 = tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", [])))
        ipv6 = tuple(sorted(r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])))
        rules.add((p["IpProtocol"], p.get("FromPort", -1), ipv4, ipv6))
    return rules


def resource_reports(events: list[tuple[float, str, str, str]], region: str) -> list[tuple[float, str]]:
    return [(t, detail) for t, r, event, detail in events if r == region and event == RESOURCES_EVENT]


def test_apply_two_regions_then_destroy_leaves_nothing(
    tmp_path: Path, moto: MotoServer, public_key: str
) -> None:
    # eu-west-2 as spike runs by default; us-east-1 as a real account's private network would:
    # its own VPC and subnet (made here, in moto only), a literal AMI and no public address.
    run_id = "it-apply-1"
    us_east = moto.client("ec2", "us-east-1")
    image = us_east.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    vpc = us_east.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = us_east.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    fleets = (
        RegionFleet("eu-west-2", 2, "t3.micro"),
        RegionFleet(
            "us-east-1", 1, "t3.micro", vpc_id=vpc, subnet_id=subnet, ami_id=image, associate_public_ip=False
        ),
    )
    spec = replace(
        fleet_spec(run_id, moto.endpoint, public_key),
        regions=fleets,
        target_ports=TARGET_PORTS,
        target_cidrs=TARGET_CIDRS,
    )
    period_s = 1.0
    workspace = TerraformWorkspace(tmp_path / "terraform", moto.env, progress_period_s=period_s)
    workspace.write_config(spec)
    workspace.init()
    events: list[tuple[float, str, str, str]] = []

    def progress(region: str, event: str, detail: str) -> None:
        events.append((time.monotonic(), region, event, detail))

    try:
        recorder(moto, "reset-recording")
        recorder(moto, "start-recording")
        try:
            run = workspace.apply(progress)
        finally:
            recorder(moto, "stop-recording")
        assert run.returncode == 0
        assert "Apply complete! Resources: 7 added" in run.summary
        # "no public address" reaches EC2 with the subnet; in a default subnet the provider sends
        # nothing and the subnet gives one (why config.py refuses false without a subnet)
        assert public_ip_requests(recorder(moto, "download-recording")) == {
            "eu-west-2": {"unset"},
            "us-east-1": {"false"},
        }
        for region in REGIONS:
            assert (region, "apply_complete") in {(e[1], e[2]) for e in events if "aws_instance" in e[3]}
        # progress: per region, created out of planned, on time whether or not Terraform spoke
        for region, planned in (("eu-west-2", 4), ("us-east-1", 3)):
            reports = resource_reports(events, region)
            assert reports[0][1].startswith(f"0/{planned} created (")
            assert reports[-1][1].startswith(f"{planned}/{planned} created (")
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(reports)]
            assert max(gaps) < period_s + 1.0, gaps
        terraform_times = [t for t, _, event, _ in events if event != RESOURCES_EVENT]
        quiet = [
            t
            for t, _, event, _ in events
            if event == RESOURCES_EVENT and t - max(x for x in terraform_times if x <= t) > period_s
        ]
        assert quiet, "no report came while Terraform was silent for longer than the period"
        check_private(workspace.workdir)

        inventory = workspace.inventory()
        assert [host.injector_id for host in inventory.hosts] == ["eu-west-2-1", "eu-west-2-2", "us-east-1-1"]
        for fleet in fleets:
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
            assert host.private_ip == match["PrivateIpAddress"]
            if fleet.associate_public_ip:
                assert host.public_ip == match["PublicIpAddress"] and host.address == host.public_ip
            else:  # private: no public address, and spike connects to the private one
                assert "PublicIpAddress" not in match and host.public_ip == ""
                assert host.address == host.private_ip
                assert match["SubnetId"] == subnet and match["VpcId"] == vpc
            assert inventory.region(fleet.region).ssh_user == "ec2-user"
            if fleet.ami_id is not None:
                assert (
                    {i["ImageId"] for i in found} == {fleet.ami_id} == {inventory.region(fleet.region).ami_id}
                )

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
            assert egress_rules(group) == EXPECTED_EGRESS
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
        for written in ("main.tf", "terraform.rc", "terraform.tfstate", "terraform-apply.log"):
            text = (workspace.workdir / written).read_text()
            assert moto.env["AWS_SECRET_ACCESS_KEY"] not in text, written
    finally:
        events.clear()
        workspace.destroy(progress)
    assert leftovers(moto, run_id) == []
    # moto keeps terminated instances listed, as EC2 does for a while: both are there, terminated
    ended = instances(moto, "eu-west-2", run_id, live_only=False)
    assert [i["State"]["Name"] for i in ended] == ["terminated", "terminated"], ended
    assert resource_reports(events, "eu-west-2")[-1][1].startswith("4/4 destroyed (")
    assert resource_reports(events, "us-east-1")[-1][1].startswith("3/3 destroyed (")
    check_private(workspace.workdir)
    us_east.delete_subnet(SubnetId=subnet)
    us_east.delete_vpc(VpcId=vpc)


def check_private(workdir: Path) -> None:
    """The run's terraform directory is 0700 and everything in it 0600 (state, backups, logs)."""
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    files = [p for p in workdir.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"terraform.tfstate", "main.tf", "terraform-apply.log"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: "0o600" for p in files}


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


# -- separate accounts: a role to assume, a profile per region ------------------------------------

LOAD_TEST_ROLE = "arn:aws:iam::111111111111:role/spike-injectors"
US_ROLE = "arn:aws:iam::222222222222:role/spike-injectors-us"


def account_client(moto: MotoServer, region: str, role_arn: str | None) -> Any:
    """EC2 as the account of `role_arn` sees it (moto keeps one world per account), or the default."""
    if role_arn is None:
        return moto.client("ec2", region)
    import boto3

    credentials = moto.client("sts", "us-east-1").assume_role(RoleArn=role_arn, RoleSessionName="it-check")[
        "Credentials"
    ]
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=moto.endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def live_in(ec2: Any, run_id: str) -> list[str]:
    pages = ec2.describe_instances(
        Filters=[
            {"Name": "tag:SpikeRunId", "Values": [run_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i["InstanceId"] for page in pages for i in page["Instances"]]


def test_the_injectors_live_in_the_account_of_the_assumed_role(
    tmp_path: Path, moto: MotoServer, public_key: str
) -> None:
    run_id = "it-role-1"
    spec = replace(
        fleet_spec(run_id, moto.endpoint, public_key),
        regions=(RegionFleet("eu-west-2", 1, "t3.micro"),),
        assume_role=AssumeRole(LOAD_TEST_ROLE, external_id="spike-it"),
    )
    workspace = TerraformWorkspace(tmp_path / "terraform", moto.env)
    workspace.write_config(spec)
    workspace.init()
    load_test, own = (
        account_client(moto, "eu-west-2", LOAD_TEST_ROLE),
        account_client(moto, "eu-west-2", None),
    )
    try:
        workspace.apply()
        ids = [host.instance_id for host in workspace.inventory().hosts]
        assert live_in(load_test, run_id) == ids and len(ids) == 1
        assert live_in(own, run_id) == []  # nothing in the operator's own account
    finally:
        workspace.destroy()
    assert live_in(load_test, run_id) == []


def test_a_region_profile_puts_that_region_in_its_account(
    tmp_path: Path, moto: MotoServer, public_key: str
) -> None:
    # The profile assumes a role of its own (as an SSO or role profile of another account would);
    # eu-west-2 has no profile and stays with the environment's credentials.
    run_id = "it-profile-1"
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text(
        f"[profile loadtest-us]\nrole_arn = {US_ROLE}\nsource_profile = base\nregion = us-east-1\n"
    )
    (aws / "credentials").write_text("[base]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = {
        **moto.env,
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        # the SDK assumes a profile's role before the provider's endpoints apply
        "AWS_ENDPOINT_URL_STS": moto.endpoint,
    }
    spec = replace(
        fleet_spec(run_id, moto.endpoint, public_key),
        regions=(RegionFleet("eu-west-2", 1, "t3.micro"), RegionFleet("us-east-1", 1, "t3.micro")),
        region_profiles={"us-east-1": "loadtest-us"},
    )
    workspace = TerraformWorkspace(tmp_path / "terraform", env)
    workspace.write_config(spec)
    workspace.init()
    try:
        workspace.apply()
        inventory = workspace.inventory()
        us_ids = [h.instance_id for h in inventory.region("us-east-1").hosts]
        eu_ids = [h.instance_id for h in inventory.region("eu-west-2").hosts]
        assert live_in(account_client(moto, "us-east-1", US_ROLE), run_id) == us_ids
        assert live_in(account_client(moto, "us-east-1", None), run_id) == []
        assert live_in(account_client(moto, "eu-west-2", None), run_id) == eu_ids
    finally:
        workspace.destroy()
    assert live_in(account_client(moto, "us-east-1", US_ROLE), run_id) == []
    assert live_in(account_client(moto, "eu-west-2", None), run_id) == []
