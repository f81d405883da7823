"""The reaper: find and remove what spike left in any region, also after a crash or lost state.

It trusts only tags (`ManagedBy=spike`, `SpikeRunId`, `SpikeExpiresAt`) and what
AWS reports now, never Terraform state, so it also finds resources created
outside Terraform or by a run whose machine died.

Which resources are *stale* (`older_than_s`): a resource is stale when its
`SpikeExpiresAt` has passed, OR it was created (instance launch time, volume,
key pair or spot request creation time) more than `older_than_s` ago. A run is
stale when any of its resources is, and then every resource of that run is
selected: security groups and network interfaces have no creation time in the
EC2 API and go with their run. A resource with neither a usable expiry nor a
creation time, and no stale run, is kept: when in doubt, do not delete.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import botocore.exceptions

from loadorch.cloud import tags as tag_keys
from loadorch.cloud.aws import (
    AWS_FAILURES,
    all_regions,
    aws_client,
    aws_errors,
    error_code,
    translate_aws_error,
)
from loadorch.cloud.leftovers import (
    KIND_ORDER,
    LIVE_SPOT_REQUEST_STATES,
    MAX_PARALLEL_REGIONS,
    Resource,
    ResourceKind,
    scan_regions,
)
from loadorch.errors import BadInputError, SpikeError

# Instances usually terminate within a minute or two; a spot or stopped one can take longer.
DEFAULT_TERMINATE_TIMEOUT_S = 600.0
# Security groups, volumes and network interfaces stay "in use" while their instances shut down.
DEFAULT_DELETE_TIMEOUT_S = 300.0
DEFAULT_POLL_S = 5.0
MAX_BACKOFF_S = 15.0

_RETRY_CODES = {
    ResourceKind.SECURITY_GROUP: {"DependencyViolation", "InvalidGroup.InUse"},
    ResourceKind.VOLUME: {"VolumeInUse", "IncorrectState"},
    ResourceKind.NETWORK_INTERFACE: {"InvalidNetworkInterface.InUse", "DependencyViolation"},
}
_GONE_CODES = {
    ResourceKind.INSTANCE: {"InvalidInstanceID.NotFound"},
    ResourceKind.SPOT_REQUEST: {"InvalidSpotInstanceRequestID.NotFound"},
    ResourceKind.SECURITY_GROUP: {"InvalidGroup.NotFound", "InvalidGroupId.NotFound"},
    ResourceKind.VOLUME: {"InvalidVolume.NotFound"},
    ResourceKind.NETWORK_INTERFACE: {"InvalidNetworkInterfaceID.NotFound"},
    ResourceKind.KEY_PAIR: {"InvalidKeyPair.NotFound"},
}


class ReapStatus(StrEnum):
    REMOVED = "removed"
    ALREADY_GONE = "already gone"
    FAILED = "failed"


@dataclass(frozen=True)
class ReapOutcome:
    """What happened to one resource; `detail` says why when it failed, and what to do."""

    resource: Resource
    status: ReapStatus
    detail: str = ""


@dataclass(frozen=True)
class ReapResult:
    """Per-resource outcomes of `reap`, in the order the resources were given."""

    outcomes: tuple[ReapOutcome, ...]

    @property
    def removed(self) -> tuple[ReapOutcome, ...]:
        """Outcomes whose resource is gone: removed now, or already gone."""
        return tuple(o for o in self.outcomes if o.status is not ReapStatus.FAILED)

    @property
    def failed(self) -> tuple[ReapOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is ReapStatus.FAILED)

    @property
    def ok(self) -> bool:
        """True when nothing that was asked for remains."""
        return not self.failed


def find_spike_resources(
    regions: Sequence[str] | None = None,
    endpoint: str | None = None,
    run_id: str | None = None,
    older_than_s: float | None = None,
    now: datetime | None = None,
) -> list[Resource]:
    """Every live resource tagged `ManagedBy=spike` in `regions` (None: every enabled region).

    `run_id` keeps one run's resources; `older_than_s` keeps stale ones only (see the module
    docstring for the rule); `now` defaults to the current UTC time.
    """
    if older_than_s is not None and older_than_s < 0:
        raise BadInputError(f"older-than must be 0 or more seconds, not {older_than_s}")
    scan = all_regions(endpoint, only=regions or None)
    tag_filter = {tag_keys.MANAGED_BY: tag_keys.MANAGED_BY_VALUE}
    if run_id:
        tag_filter[tag_keys.RUN_ID] = run_id
    found = scan_regions(scan, endpoint, tag_filter)
    if older_than_s is None:
        return found
    return select_stale(found, older_than_s, now or datetime.now(UTC))


def select_stale(resources: Iterable[Resource], older_than_s: float, now: datetime) -> list[Resource]:
    """The stale resources among `resources`, by the rule in the module docstring (pure)."""
    cutoff = now - timedelta(seconds=older_than_s)

    def stale(resource: Resource) -> bool:
        expires_at = resource.expires_at
        if expires_at is not None and expires_at <= now:
            return True
        return resource.created_at is not None and resource.created_at <= cutoff

    candidates = list(resources)
    stale_runs = {r.run_id for r in candidates if r.run_id and stale(r)}
    return [r for r in candidates if stale(r) or (r.run_id and r.run_id in stale_runs)]


def reap(
    resources: Sequence[Resource],
    endpoint: str | None = None,
    *,
    terminate_timeout_s: float = DEFAULT_TERMINATE_TIMEOUT_S,
    delete_timeout_s: float = DEFAULT_DELETE_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReapResult:
    """Remove `resources`: per region, cancel spot requests, terminate instances and wait (bounded),
    then delete network interfaces, volumes, security groups (retrying while they are still in use,
    bounded) and key pairs.

    Idempotent: what is already gone is reported as such, not as a failure. Never raises for a
    resource that could not be removed; its outcome says why.
    """
    by_region: dict[str, list[Resource]] = {}
    for resource in resources:
        by_region.setdefault(resource.region, []).append(resource)
    if not by_region:
        return ReapResult(())
    outcomes: dict[tuple[str, ResourceKind, str], ReapOutcome] = {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_REGIONS, len(by_region))) as pool:
        futures = [
            pool.submit(
                _RegionReaper(
                    region, items, endpoint, terminate_timeout_s, delete_timeout_s, poll_s, sleep, clock
                ).run
            )
            for region, items in by_region.items()
        ]
        for future in futures:
            for outcome in future.result():
                outcomes[_key(outcome.resource)] = outcome
    return ReapResult(tuple(outcomes[_key(r)] for r in resources))


def _key(resource: Resource) -> tuple[str, ResourceKind, str]:
    return (resource.region, resource.kind, resource.id)


class _RegionReaper:
    """Removes one region's resources in dependency order."""

    def __init__(
        self,
        region: str,
        resources: list[Resource],
        endpoint: str | None,
        terminate_timeout_s: float,
        delete_timeout_s: float,
        poll_s: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.region = region
        self.resources = sorted(resources, key=lambda r: (KIND_ORDER[r.kind], r.id))
        self.endpoint = endpoint
        self.terminate_timeout_s = terminate_timeout_s
        self.delete_timeout_s = delete_timeout_s
        self.poll_s = poll_s
        self.sleep = sleep
        self.clock = clock

    def of_kind(self, kind: ResourceKind) -> list[Resource]:
        return [r for r in self.resources if r.kind is kind]

    def run(self) -> list[ReapOutcome]:
        try:
            ec2 = aws_client("ec2", self.region, self.endpoint)
        except SpikeError as exc:
            return [ReapOutcome(r, ReapStatus.FAILED, exc.render()) for r in self.resources]
        outcomes: list[ReapOutcome] = []
        spot_cancelled = {
            r.id: self._cancel_spot_request(ec2, r) for r in self.of_kind(ResourceKind.SPOT_REQUEST)
        }
        outcomes.extend(self._terminate_instances(ec2, spot_cancelled))
        deadline = self.clock() + self.delete_timeout_s
        for kind, delete in (
            (ResourceKind.NETWORK_INTERFACE, lambda r: ec2.delete_network_interface(NetworkInterfaceId=r.id)),
            (ResourceKind.VOLUME, lambda r: ec2.delete_volume(VolumeId=r.id)),
            (ResourceKind.SECURITY_GROUP, lambda r: ec2.delete_security_group(GroupId=r.id)),
        ):
            for resource in self.of_kind(kind):
                outcomes.append(self._delete_with_retry(resource, delete, deadline))
        for resource in self.of_kind(ResourceKind.KEY_PAIR):
            outcomes.append(self._delete_key_pair(ec2, resource))
        return outcomes

    def _failed(self, resource: Resource, exc: Exception, doing: str) -> ReapOutcome:
        error = translate_aws_error(exc, f"{self.region} {resource.kind} {resource.id}")
        return ReapOutcome(resource, ReapStatus.FAILED, f"{doing}: {error.message}")

    def _cancel_spot_request(self, ec2: Any, resource: Resource) -> ReapOutcome:
        try:
            # Asked first: a request that is closed, cancelled or no longer listed is already gone, and
            # cancelling an unknown id is an error.
            answer = ec2.describe_spot_instance_requests(
                Filters=[{"Name": "spot-instance-request-id", "Values": [resource.id]}]
            )
            states = [r.get("State") for r in answer.get("SpotInstanceRequests", [])]
            if not any(state in LIVE_SPOT_REQUEST_STATES for state in states):
                return ReapOutcome(resource, ReapStatus.ALREADY_GONE)
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[resource.id])
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in _GONE_CODES[ResourceKind.SPOT_REQUEST]:
                return ReapOutcome(resource, ReapStatus.ALREADY_GONE)
            return self._failed(resource, exc, "cancel failed")
        except AWS_FAILURES as exc:
            return self._failed(resource, exc, "cancel failed")
        return ReapOutcome(resource, ReapStatus.REMOVED, "cancelled")

    def _terminate_instances(self, ec2: Any, spot_cancelled: dict[str, ReapOutcome]) -> list[ReapOutcome]:
        instances = self.of_kind(ResourceKind.INSTANCE)
        listed = {r.id for r in instances}
        # A spot request's instance may carry no tags; it is spike's all the same.
        spot_instances = {
            r.id: r.instance_id
            for r in self.of_kind(ResourceKind.SPOT_REQUEST)
            if r.instance_id and spot_cancelled[r.id].status is not ReapStatus.FAILED
        }
        to_terminate = sorted(listed | set(spot_instances.values()))
        errors: dict[str, ReapOutcome] = {}
        gone: set[str] = set()
        for instance_id in to_terminate:
            try:
                answer = ec2.terminate_instances(InstanceIds=[instance_id])
                previous = [
                    i.get("PreviousState", {}).get("Name") for i in answer.get("TerminatingInstances", [])
                ]
                if previous == ["terminated"]:
                    gone.add(instance_id)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in _GONE_CODES[ResourceKind.INSTANCE]:
                    gone.add(instance_id)
                    continue
                errors[instance_id] = self._failed(
                    _instance_stub(self.region, instance_id), exc, "terminate failed"
                )
            except AWS_FAILURES as exc:
                errors[instance_id] = self._failed(
                    _instance_stub(self.region, instance_id), exc, "terminate failed"
                )
        states = self._wait_terminated(ec2, [i for i in to_terminate if i not in errors and i not in gone])

        def outcome_for(instance_id: str, resource: Resource) -> ReapOutcome:
            if instance_id in errors:
                return ReapOutcome(resource, ReapStatus.FAILED, errors[instance_id].detail)
            if instance_id in gone:
                return ReapOutcome(resource, ReapStatus.ALREADY_GONE)
            state = states.get(instance_id, "terminated")
            if state == "terminated":
                return ReapOutcome(resource, ReapStatus.REMOVED, "terminated")
            return ReapOutcome(
                resource,
                ReapStatus.FAILED,
                f"still {state} after {self.terminate_timeout_s:.0f} s; run `spike reap` again later "
                "or check it in the AWS console",
            )

        outcomes = [outcome_for(r.id, r) for r in instances]
        for request in self.of_kind(ResourceKind.SPOT_REQUEST):
            cancelled = spot_cancelled[request.id]
            spot_instance_id = spot_instances.get(request.id)
            if spot_instance_id is None or spot_instance_id in listed:
                outcomes.append(cancelled)
                continue
            instance = outcome_for(spot_instance_id, _instance_stub(self.region, spot_instance_id))
            if instance.status is ReapStatus.FAILED:
                outcomes.append(
                    ReapOutcome(
                        request,
                        ReapStatus.FAILED,
                        f"cancelled, but its instance {spot_instance_id}: {instance.detail}",
                    )
                )
            else:
                outcomes.append(
                    ReapOutcome(
                        request, cancelled.status, f"cancelled; its instance {spot_instance_id} terminated"
                    )
                )
        return outcomes

    def _wait_terminated(self, ec2: Any, instance_ids: list[str]) -> dict[str, str]:
        """Each instance's last known state, polling until all are terminated or time is up."""
        states = dict.fromkeys(instance_ids, "shutting-down")
        pending = set(instance_ids)
        deadline = self.clock() + self.terminate_timeout_s
        while pending:
            try:
                with aws_errors(self.region):
                    answer = ec2.describe_instances(
                        Filters=[{"Name": "instance-id", "Values": sorted(pending)}]
                    )
            except SpikeError as exc:
                for instance_id in pending:
                    states[instance_id] = f"unknown ({exc.message})"
                return states
            seen = {
                i["InstanceId"]: i["State"]["Name"]
                for reservation in answer.get("Reservations", [])
                for i in reservation.get("Instances", [])
            }
            for instance_id in list(pending):
                # An instance the API no longer lists is gone for good.
                states[instance_id] = seen.get(instance_id, "terminated")
                if states[instance_id] == "terminated":
                    pending.discard(instance_id)
            remaining_s = deadline - self.clock()
            if not pending or remaining_s <= 0:
                break
            self.sleep(min(self.poll_s, remaining_s))
        return states

    def _delete_with_retry(
        self, resource: Resource, delete: Callable[[Resource], Any], deadline: float
    ) -> ReapOutcome:
        delay_s = 1.0
        retry_codes = _RETRY_CODES.get(resource.kind, set())
        while True:
            try:
                delete(resource)
            except botocore.exceptions.ClientError as exc:
                code = error_code(exc)
                if code in _GONE_CODES[resource.kind]:
                    return ReapOutcome(resource, ReapStatus.ALREADY_GONE)
                if code in retry_codes and self.clock() + delay_s <= deadline:
                    self.sleep(delay_s)
                    delay_s = min(delay_s * 2, MAX_BACKOFF_S)
                    continue
                if code in retry_codes:
                    return self._failed(
                        resource,
                        exc,
                        f"still in use after {self.delete_timeout_s:.0f} s (something outside this sweep may "
                        "use it); delete failed",
                    )
                return self._failed(resource, exc, "delete failed")
            except AWS_FAILURES as exc:
                return self._failed(resource, exc, "delete failed")
            return ReapOutcome(resource, ReapStatus.REMOVED, "deleted")

    def _delete_key_pair(self, ec2: Any, resource: Resource) -> ReapOutcome:
        # delete_key_pair succeeds for a missing key, so ask first to report "already gone" truthfully.
        try:
            ec2.describe_key_pairs(KeyNames=[resource.id])
            ec2.delete_key_pair(KeyName=resource.id)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in _GONE_CODES[ResourceKind.KEY_PAIR]:
                return ReapOutcome(resource, ReapStatus.ALREADY_GONE)
            return self._failed(resource, exc, "delete failed")
        except AWS_FAILURES as exc:
            return self._failed(resource, exc, "delete failed")
        return ReapOutcome(resource, ReapStatus.REMOVED, "deleted")


def _instance_stub(region: str, instance_id: str) -> Resource:
    return Resource(region, ResourceKind.INSTANCE, instance_id, "unknown")
