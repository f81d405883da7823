"""Finding a run's cloud resources by their tags, also when local state is lost.

After `terraform destroy`, spike asks AWS itself (not Terraform's state) what
still carries the run's `SpikeRunId` tag, and fails loudly if anything does:
state can be lost, a region's apply can half-fail, a resource can be created
outside Terraform. `spike reap` uses the same scan with `ManagedBy=spike`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loadorch.cloud import tags as tag_keys
from loadorch.cloud.aws import aws_client, aws_errors
from loadorch.errors import InfrastructureError, SpikeError

# Regions are scanned in parallel: a sweep of every region one by one takes minutes on real AWS.
MAX_PARALLEL_REGIONS = 8

# Instance states that still cost money or can come back; "terminated" is gone for good.
LIVE_INSTANCE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
# Spot requests that can still launch (or hold) an instance.
LIVE_SPOT_REQUEST_STATES = ("open", "active")
# Volumes that still exist; "deleted" ones linger in the API for a while.
LIVE_VOLUME_STATES = ("creating", "available", "in-use", "deleting", "error")


class ResourceKind(StrEnum):
    """What a tagged resource is, in the order `reap` removes them (dependants first)."""

    SPOT_REQUEST = "spot-request"
    INSTANCE = "instance"
    NETWORK_INTERFACE = "network-interface"
    VOLUME = "volume"
    SECURITY_GROUP = "security-group"
    KEY_PAIR = "key-pair"


KIND_ORDER = {kind: index for index, kind in enumerate(ResourceKind)}


@dataclass(frozen=True)
class Resource:
    """One cloud resource spike created, as AWS reports it now.

    `id` is what deletes it (a key pair's name, every other kind's id); `state` is AWS's own word
    for it ("running", "available", ...; security groups and key pairs report "exists");
    `created_at` is the launch or creation time when the EC2 API gives one.
    """

    region: str
    kind: ResourceKind
    id: str
    state: str
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    created_at: datetime | None = None
    # A spot request's instance, which carries no tags of its own unless its launch spec said so.
    instance_id: str | None = None

    @property
    def run_id(self) -> str:
        return self.tags.get(tag_keys.RUN_ID, "")

    @property
    def owner(self) -> str:
        return self.tags.get(tag_keys.OWNER, "")

    @property
    def expires_at(self) -> datetime | None:
        """The `SpikeExpiresAt` tag as a UTC datetime; None when missing or not RFC 3339."""
        return parse_expires_at(self.tags.get(tag_keys.EXPIRES_AT, ""))


def parse_expires_at(value: str) -> datetime | None:
    """`2026-11-26T14:05:00Z` (or with an offset) as an aware UTC datetime; None if it is not one."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def sort_key(resource: Resource) -> tuple[str, int, str]:
    return (resource.region, KIND_ORDER[resource.kind], resource.id)


def find_run_resources(run_id: str, regions: Sequence[str], endpoint: str | None = None) -> list[Resource]:
    """Everything in `regions` tagged `SpikeRunId=<run_id>` that still exists.

    Instances that are not terminated, spot requests that are open or active, volumes and
    network interfaces that are not deleted, every security group and key pair. Sorted by
    region, then in removal order.
    """
    return scan_regions(regions, endpoint, {tag_keys.RUN_ID: run_id})


def assert_run_gone(run_id: str, regions: Sequence[str], endpoint: str | None = None) -> None:
    """Raise InfrastructureError naming every resource of the run that is still there."""
    left = find_run_resources(run_id, regions, endpoint)
    if left:
        listed = ", ".join(f"{r.region} {r.kind} {r.id} ({r.state})" for r in left)
        raise InfrastructureError(
            f"{len(left)} resource(s) of run {run_id} still exist after teardown: {listed}",
            where=", ".join(sorted({r.region for r in left})),
            fix=f"run `spike reap --run {run_id} --yes`, then check the AWS console",
        )


def scan_regions(
    regions: Iterable[str], endpoint: str | None, tag_filter: Mapping[str, str]
) -> list[Resource]:
    """Every live resource in `regions` whose tags include all of `tag_filter`.

    Regions are scanned in parallel; if any region fails, the error names every failed region.
    """
    wanted = list(dict.fromkeys(regions))
    if not wanted:
        return []
    results: dict[str, list[Resource]] = {}
    failures: dict[str, SpikeError] = {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_REGIONS, len(wanted))) as pool:
        futures = {region: pool.submit(scan_region, region, endpoint, tag_filter) for region in wanted}
        for region, future in futures.items():
            try:
                results[region] = future.result()
            except SpikeError as exc:
                failures[region] = exc
    if failures:
        if len(failures) == 1:
            raise next(iter(failures.values()))
        details = "; ".join(f"{region}: {exc.message}" for region, exc in failures.items())
        raise InfrastructureError(
            f"could not list resources in {len(failures)} region(s): {details}",
            where=", ".join(failures),
            fix="check credentials, permissions and that these regions are enabled, then retry",
        )
    found = [resource for region in wanted for resource in results[region]]
    return sorted(found, key=sort_key)


def scan_region(region: str, endpoint: str | None, tag_filter: Mapping[str, str]) -> list[Resource]:
    """One region's live resources carrying every tag in `tag_filter`."""
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in tag_filter.items()]
    ec2 = aws_client("ec2", region, endpoint)
    found: list[Resource] = []
    for kind, lister in _LISTERS.items():
        with aws_errors(f"{region} ({kind}s)"):
            found.extend(lister(ec2, region, filters))
    return found


def _tag_dict(raw: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in raw or ()}


def _pages(ec2: Any, operation: str, key: str, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
    for page in ec2.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def _instances(ec2: Any, region: str, filters: list[dict[str, Any]]) -> Iterable[Resource]:
    state_filter = {"Name": "instance-state-name", "Values": list(LIVE_INSTANCE_STATES)}
    for reservation in _pages(ec2, "describe_instances", "Reservations", Filters=[*filters, state_filter]):
        for instance in reservation.get("Instances", []):
            yield Resource(
                region,
                ResourceKind.INSTANCE,
                instance["InstanceId"],
                instance["State"]["Name"],
                _tag_dict(instance.get("Tags")),
                _utc(instance.get("LaunchTime")),
            )


def _spot_requests(ec2: Any, region: str, filters: list[dict[str, Any]]) -> Iterable[Resource]:
    state_filter = {"Name": "state", "Values": list(LIVE_SPOT_REQUEST_STATES)}
    pages = _pages(
        ec2, "describe_spot_instance_requests", "SpotInstanceRequests", Filters=[*filters, state_filter]
    )
    for request in pages:
        yield Resource(
            region,
            ResourceKind.SPOT_REQUEST,
            request["SpotInstanceRequestId"],
            request["State"],
            _tag_dict(request.get("Tags")),
            _utc(request.get("CreateTime")),
            instance_id=request.get("InstanceId"),
        )


def _network_interfaces(ec2: Any, region: str, filters: list[dict[str, Any]]) -> Iterable[Resource]:
    for eni in _pages(ec2, "describe_network_interfaces", "NetworkInterfaces", Filters=filters):
        yield Resource(
            region,
            ResourceKind.NETWORK_INTERFACE,
            eni["NetworkInterfaceId"],
            eni.get("Status", "unknown"),
            _tag_dict(eni.get("TagSet")),
        )


def _volumes(ec2: Any, region: str, filters: list[dict[str, Any]]) -> Iterable[Resource]:
    state_filter = {"Name": "status", "Values": list(LIVE_VOLUME_STATES)}
    for volume in _pages(ec2, "describe_volumes", "Volumes", Filters=[*filters, state_filter]):
        yield Resource(
            region,
            ResourceKind.VOLUME,
            volume["VolumeId"],
            volume.get("State", "unknown"),
            _tag_dict(volume.get("Tags")),
            _utc(volume.get("CreateTime")),
        )


def _security_groups(ec2: Any, region: str, filters: list[dict[str, Any]]) -> Iterable[Resource]:
    for group in _pages(ec2, "describe_security_groups", "SecurityGroups", Filters=filters):
        yield Resource(
            region, ResourceKind.SECURITY_GROUP, group["GroupId"], "exists", _tag_dict(group.get("Tags"))
        )


def _key_pairs(ec2: Any, region: str, filters: list[dict[str, Any]]) -> Iterable[Resource]:
    # describe_key_pairs has no pagination: an account holds at most a few thousand key pairs per region.
    for pair in ec2.describe_key_pairs(Filters=filters).get("KeyPairs", []):
        yield Resource(
            region,
            ResourceKind.KEY_PAIR,
            pair["KeyName"],
            "exists",
            _tag_dict(pair.get("Tags")),
            _utc(pair.get("CreateTime")),
        )


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_LISTERS: dict[ResourceKind, Callable[[Any, str, list[dict[str, Any]]], Iterable[Resource]]] = {
    ResourceKind.SPOT_REQUEST: _spot_requests,
    ResourceKind.INSTANCE: _instances,
    ResourceKind.NETWORK_INTERFACE: _network_interfaces,
    ResourceKind.VOLUME: _volumes,
    ResourceKind.SECURITY_GROUP: _security_groups,
    ResourceKind.KEY_PAIR: _key_pairs,
}
