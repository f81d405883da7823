"""The reaper and the leftover check against a real moto server, with resources made outside Terraform.

The world every test starts from (two regions):
- run r-old, expired (SpikeExpiresAt in 2020): in each region an instance, a security group and a
  key pair; in eu-west-2 also a tagged volume, a network interface and a spot request;
- run r-new, not expired (2099): one instance in eu-west-2;
- one instance without any tags in eu-west-2, which nothing may touch.

AWS_ENDPOINT_URL points at a closed loopback port, so any call that forgets the endpoint fails
(and could never reach AWS).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import typer
from botocore.stub import Stubber
from moto_server import FAKE_CREDENTIALS, MotoServer
from typer.testing import CliRunner

from loadorch.cli.reap import parse_duration_s, prices, reap
from loadorch.cloud import reaper
from loadorch.cloud.aws import all_regions
from loadorch.cloud.leftovers import Resource, ResourceKind, assert_run_gone, find_run_resources
from loadorch.cloud.reaper import ReapStatus, find_spike_resources
from loadorch.cloud.tags import run_tags
from loadorch.errors import BadInputError, InfrastructureError

REGION_A = "eu-west-2"
REGION_B = "us-east-1"
REGIONS = (REGION_A, REGION_B)
EXPIRED = "2020-01-01T00:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"


@dataclass
class World:
    endpoint: str
    moto: MotoServer
    # (region, kind, id) of every resource spike "created", per run
    runs: dict[str, set[tuple[str, ResourceKind, str]]] = field(default_factory=dict)
    untagged_instance: str = ""
    spot_instance: str = ""

    def ec2(self, region: str) -> Any:
        return self.moto.client("ec2", region)

    def all_spike(self) -> set[tuple[str, ResourceKind, str]]:
        return set().union(*self.runs.values())


def keys(resources: list[Resource]) -> set[tuple[str, ResourceKind, str]]:
    return {(r.region, r.kind, r.id) for r in resources}


def tag_specs(resource_types: list[str], tags: dict[str, str]) -> list[dict[str, Any]]:
    pairs = [{"Key": k, "Value": v} for k, v in tags.items()]
    return [{"ResourceType": t, "Tags": pairs} for t in resource_types]


_AMIS: dict[tuple[str, str], str] = {}


def ami(ec2: Any) -> str:
    # describe_images is slow on moto (it loads its AMI catalogue): ask once per server and region.
    key = (ec2.meta.endpoint_url, ec2.meta.region_name)
    if key not in _AMIS:
        _AMIS[key] = str(ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"])
    return _AMIS[key]


def launch(ec2: Any, tags: dict[str, str] | None, **extra: Any) -> tuple[str, str]:
    """An instance (and its root volume's id), tagged like Terraform would tag them."""
    kwargs: dict[str, Any] = {"ImageId": ami(ec2), "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.medium"}
    if tags:
        kwargs["TagSpecifications"] = tag_specs(["instance", "volume"], tags)
    instance = ec2.run_instances(**kwargs, **extra)["Instances"][0]
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}]
    )
    return instance["InstanceId"], volumes["Volumes"][0]["VolumeId"]


def seed_run(world: World, run_id: str, expires_at: str, region: str, *, extras: bool) -> None:
    ec2 = world.ec2(region)
    tags = run_tags(run_id, "sre@example.test", expires_at, region)
    made = world.runs.setdefault(run_id, set())
    group = ec2.create_security_group(
        GroupName=f"spike-{run_id}",
        Description="spike injectors",
        TagSpecifications=tag_specs(["security-group"], tags),
    )["GroupId"]
    ec2.create_key_pair(KeyName=f"spike-{run_id}", TagSpecifications=tag_specs(["key-pair"], tags))
    instance, root = launch(ec2, tags, SecurityGroupIds=[group], KeyName=f"spike-{run_id}")
    made |= {
        (region, ResourceKind.SECURITY_GROUP, group),
        (region, ResourceKind.KEY_PAIR, f"spike-{run_id}"),
        (region, ResourceKind.INSTANCE, instance),
        (region, ResourceKind.VOLUME, root),
    }
    if not extras:
        return
    volume = ec2.create_volume(
        AvailabilityZone=f"{region}a", Size=8, VolumeType="gp3", TagSpecifications=tag_specs(["volume"], tags)
    )["VolumeId"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    eni = ec2.create_network_interface(
        SubnetId=subnet, TagSpecifications=tag_specs(["network-interface"], tags)
    )
    spot = ec2.request_spot_instances(
        InstanceCount=1,
        LaunchSpecification={"ImageId": ami(ec2), "InstanceType": "t3.medium"},
        TagSpecifications=tag_specs(["spot-instances-request"], tags),
    )["SpotInstanceRequests"][0]
    world.spot_instance = spot["InstanceId"]
    made |= {
        (region, ResourceKind.VOLUME, volume),
        (region, ResourceKind.NETWORK_INTERFACE, eni["NetworkInterface"]["NetworkInterfaceId"]),
        (region, ResourceKind.SPOT_REQUEST, spot["SpotInstanceRequestId"]),
    }


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as moto:
        yield moto


@pytest.fixture
def world(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION_B)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("SPIKE_HOME", str(tmp_path / "spike-home"))
    # A fresh, empty AWS for every test.
    request = urllib.request.Request(f"{moto_server.endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass
    _AMIS.clear()
    world = World(endpoint=moto_server.endpoint, moto=moto_server)
    for region in REGIONS:
        seed_run(world, "r-old", EXPIRED, region, extras=region == REGION_A)
    seed_run(world, "r-new", FUTURE, REGION_A, extras=False)
    world.untagged_instance, _ = launch(world.ec2(REGION_A), None)
    return world


def instance_state(world: World, region: str, instance_id: str) -> str:
    answer = world.ec2(region).describe_instances(InstanceIds=[instance_id])
    return str(answer["Reservations"][0]["Instances"][0]["State"]["Name"])


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("reap")(reap)
    app.command("prices")(prices)
    return app


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli(), list(args))


def test_finds_exactly_spikes_resources_in_the_given_regions(world: World) -> None:
    found = find_spike_resources(REGIONS, world.endpoint)
    assert keys(found) == world.all_spike()
    assert all(r.tags["ManagedBy"] == "spike" for r in found)
    assert world.untagged_instance not in {r.id for r in found}
    # The spot request's own instance carries no tags: it is found through its request.
    spot = next(r for r in found if r.kind is ResourceKind.SPOT_REQUEST)
    assert spot.instance_id == world.spot_instance
    instance = next(r for r in found if r.kind is ResourceKind.INSTANCE and r.run_id == "r-new")
    assert (instance.state, instance.owner, instance.created_at is not None) == (
        "running",
        "sre@example.test",
        True,
    )


def test_sweeps_every_region_when_none_are_given(world: World) -> None:
    assert len(all_regions(world.endpoint)) > 10
    assert keys(find_spike_resources(None, world.endpoint)) == world.all_spike()


def test_unknown_region_is_refused(world: World) -> None:
    with pytest.raises(BadInputError, match="unknown or disabled region"):
        find_spike_resources(["eu-westish-9"], world.endpoint)


def test_run_filter(world: World) -> None:
    assert keys(find_spike_resources(REGIONS, world.endpoint, run_id="r-new")) == world.runs["r-new"]
    assert keys(find_spike_resources(REGIONS, world.endpoint, run_id="r-old")) == world.runs["r-old"]
    assert find_spike_resources(REGIONS, world.endpoint, run_id="r-none") == []


def test_older_than_selects_expired_runs_whole(world: World) -> None:
    # Everything was launched seconds ago: only r-old's passed SpikeExpiresAt makes it stale, and
    # it takes its security groups (which have no creation time) along.
    stale = find_spike_resources(REGIONS, world.endpoint, older_than_s=2 * 3600)
    assert keys(stale) == world.runs["r-old"]
    assert ResourceKind.SECURITY_GROUP in {r.kind for r in stale}


def test_find_run_resources_lists_every_kind_of_the_run(world: World) -> None:
    found = find_run_resources("r-old", REGIONS, world.endpoint)
    assert keys(found) == world.runs["r-old"]
    assert {r.kind for r in found if r.region == REGION_A} == set(ResourceKind)
    assert [r.region for r in found] == sorted(r.region for r in found)
    with pytest.raises(InfrastructureError) as caught:
        assert_run_gone("r-old", REGIONS, world.endpoint)
    assert "still exist after teardown" in caught.value.render()
    assert "spike reap --run r-old --yes" in caught.value.render()


def test_cli_dry_run_lists_and_terminates_nothing(world: World) -> None:
    result = invoke("reap", "--region", f"{REGION_A},{REGION_B}", "--aws-endpoint", world.endpoint)
    assert result.exit_code == 0, result.output
    assert "dry run: nothing terminated; add --yes" in result.output
    assert f"found {len(world.all_spike())} spike resource(s)" in result.output
    for _, _, resource_id in world.all_spike():
        assert resource_id in result.output
    assert world.untagged_instance not in result.output
    for region, kind, resource_id in world.all_spike():
        if kind is ResourceKind.INSTANCE:
            assert instance_state(world, region, resource_id) == "running"
    assert keys(find_spike_resources(REGIONS, world.endpoint)) == world.all_spike()


def test_cli_yes_removes_every_spike_resource_and_nothing_else(world: World) -> None:
    result = invoke(
        "reap", "--region", REGION_A, "--region", REGION_B, "--aws-endpoint", world.endpoint, "--yes"
    )
    assert result.exit_code == 0, result.output
    assert f"reaped: {len(world.all_spike())} resource(s) gone" in result.output
    assert "failed" not in result.output

    for region, kind, resource_id in world.all_spike():
        if kind is ResourceKind.INSTANCE:
            assert instance_state(world, region, resource_id) == "terminated"
    assert instance_state(world, REGION_A, world.spot_instance) == "terminated"
    assert instance_state(world, REGION_A, world.untagged_instance) == "running"
    for region in REGIONS:
        ec2 = world.ec2(region)
        assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
        assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert find_run_resources("r-old", REGIONS, world.endpoint) == []
    assert find_run_resources("r-new", REGIONS, world.endpoint) == []
    assert_run_gone("r-old", REGIONS, world.endpoint)

    again = invoke(
        "reap", "--region", REGION_A, "--region", REGION_B, "--aws-endpoint", world.endpoint, "--yes"
    )
    assert again.exit_code == 0, again.output
    assert "nothing to reap" in again.output


def test_cli_yes_with_older_than_keeps_the_live_run(world: World) -> None:
    result = invoke(
        "reap",
        "--older-than",
        "2h",
        "--region",
        "eu-west-2,us-east-1",
        "--aws-endpoint",
        world.endpoint,
        "--yes",
    )
    assert result.exit_code == 0, result.output
    assert find_run_resources("r-old", REGIONS, world.endpoint) == []
    assert keys(find_run_resources("r-new", REGIONS, world.endpoint)) == world.runs["r-new"]


def test_cli_run_filter_and_bad_duration(world: World) -> None:
    result = invoke("reap", "--run", "r-new", "--region", REGION_A, "--aws-endpoint", world.endpoint, "--yes")
    assert result.exit_code == 0, result.output
    assert find_run_resources("r-new", REGIONS, world.endpoint) == []
    assert keys(find_run_resources("r-old", REGIONS, world.endpoint)) == world.runs["r-old"]

    bad = invoke("reap", "--older-than", "two hours", "--aws-endpoint", world.endpoint)
    assert bad.exit_code == 2
    assert "not a duration" in bad.output


def test_reap_is_idempotent(world: World) -> None:
    found = find_spike_resources(REGIONS, world.endpoint)
    first = reaper.reap(found, world.endpoint)
    assert first.ok, first.failed
    assert [o.resource for o in first.outcomes] == found
    second = reaper.reap(found, world.endpoint)
    assert second.ok, second.failed
    statuses = {o.resource.kind: o.status for o in second.outcomes}
    assert statuses[ResourceKind.SECURITY_GROUP] is ReapStatus.ALREADY_GONE
    assert statuses[ResourceKind.KEY_PAIR] is ReapStatus.ALREADY_GONE
    assert statuses[ResourceKind.INSTANCE] is ReapStatus.ALREADY_GONE
    assert statuses[ResourceKind.NETWORK_INTERFACE] is ReapStatus.ALREADY_GONE


def test_cli_prices_shows_the_table(world: World) -> None:
    result = invoke("prices", "--region", REGION_A, "--type", "c6i.large")
    assert result.exit_code == 0, result.output
    assert "built in" in result.output
    assert "c6i.large" in result.output and "t3.medium" not in result.output
    unknown = invoke("prices", "--type", "z9.mega")
    assert unknown.exit_code == 2
    assert "spike prices --refresh --type z9.mega" in unknown.output


# moto deletes a security group even while an instance uses it, so the retry while AWS says
# DependencyViolation is checked on a stubbed client (loopback endpoint, nothing is sent).


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def stubbed_ec2(monkeypatch: pytest.MonkeyPatch) -> Stubber:
    client = boto3.client(
        "ec2",
        region_name=REGION_A,
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    monkeypatch.setattr(reaper, "aws_client", lambda *_args, **_kwargs: client)
    stubber = Stubber(client)
    stubber.activate()
    return stubber


GROUP = Resource(
    REGION_A, ResourceKind.SECURITY_GROUP, "sg-0123456789abcdef0", "exists", {"ManagedBy": "spike"}
)


def test_security_group_deletion_retries_with_backoff_while_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    stubber = stubbed_ec2(monkeypatch)
    for _ in range(3):
        stubber.add_client_error(
            "delete_security_group", "DependencyViolation", "resource sg has a dependent object"
        )
    stubber.add_response("delete_security_group", {}, {"GroupId": GROUP.id})
    fake = FakeTime()
    result = reaper.reap([GROUP], "http://127.0.0.1:9", sleep=fake.sleep, clock=fake.clock)
    assert [(o.status, o.detail) for o in result.outcomes] == [(ReapStatus.REMOVED, "deleted")]
    assert fake.sleeps == [1.0, 2.0, 4.0]
    stubber.assert_no_pending_responses()


def test_security_group_deletion_gives_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    stubber = stubbed_ec2(monkeypatch)
    for _ in range(20):
        stubber.add_client_error(
            "delete_security_group", "DependencyViolation", "resource sg has a dependent object"
        )
    fake = FakeTime()
    result = reaper.reap(
        [GROUP], "http://127.0.0.1:9", delete_timeout_s=30, sleep=fake.sleep, clock=fake.clock
    )
    (outcome,) = result.failed
    assert "still in use after 30 s" in outcome.detail
    assert "DependencyViolation" in outcome.detail
    assert sum(fake.sleeps) <= 30
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0, 15.0]
    assert not result.ok


def test_cli_exits_3_when_something_cannot_be_removed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(resources: list[Resource], endpoint: str | None) -> reaper.ReapResult:
        return reaper.ReapResult(
            tuple(reaper.ReapOutcome(r, ReapStatus.FAILED, "delete failed: stuck") for r in resources)
        )

    monkeypatch.setattr(reaper, "reap", stuck)
    result = invoke("reap", "--run", "r-new", "--region", REGION_A, "--aws-endpoint", world.endpoint, "--yes")
    assert result.exit_code == 3
    assert "could not be removed" in result.output
    assert "delete failed: stuck" in result.output


# The staleness rule and the duration option are pure; they live here, next to the sweep they steer.

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def resource(kind: ResourceKind, rid: str, run: str, expires: str, created_h_ago: float | None) -> Resource:
    created = None if created_h_ago is None else NOW - timedelta(hours=created_h_ago)
    return Resource(REGION_A, kind, rid, "running", run_tags(run, "o", expires, REGION_A), created)


def test_stale_rule_expired_or_launched_long_ago_takes_the_whole_run() -> None:
    old_launch = resource(ResourceKind.INSTANCE, "i-old", "r-1", FUTURE, created_h_ago=3)
    old_group = resource(ResourceKind.SECURITY_GROUP, "sg-old", "r-1", FUTURE, created_h_ago=None)
    expired = resource(ResourceKind.KEY_PAIR, "kp-exp", "r-2", "2026-11-26T11:59:59Z", created_h_ago=0.1)
    fresh = resource(ResourceKind.INSTANCE, "i-new", "r-3", FUTURE, created_h_ago=1)
    fresh_group = resource(ResourceKind.SECURITY_GROUP, "sg-new", "r-3", FUTURE, created_h_ago=None)
    unknown_age = resource(ResourceKind.SECURITY_GROUP, "sg-odd", "r-4", "not a time", created_h_ago=None)
    everything = [old_launch, old_group, expired, fresh, fresh_group, unknown_age]
    assert reaper.select_stale(everything, 2 * 3600, NOW) == [old_launch, old_group, expired]
    assert reaper.select_stale(everything, 0.5 * 3600, NOW) == [
        old_launch,
        old_group,
        expired,
        fresh,
        fresh_group,
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (" 2H ", 7200)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "-2h", "1m1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="not a duration"):
        parse_duration_s(text)
