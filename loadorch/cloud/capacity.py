"""Capacity preflight of an aws run, after the credentials check and before anything is applied.

Two questions per region, asked of EC2 and Service Quotas, so that a run is refused in seconds
instead of failing half-applied minutes later:

1. Is the instance type offered in the region? (`DescribeInstanceTypeOfferings`, location type
   `region`.) If not: a PreflightError naming the region, the type, and types that *are*
   offered there, found with the same API.
2. Does the fleet fit the account's vCPU quota there? vCPUs per instance come from
   `DescribeInstanceTypes`; the quota from Service Quotas `GetServiceQuota`: L-1216C47A
   (Running On-Demand Standard instances) or, for spot, L-34B43A08 (All Standard Spot Instance
   Requests), both counted in vCPUs over the standard families A, C, D, H, I, M, R, T and Z. The
   vCPUs already running in the account (`DescribeInstances`, same market, standard families)
   count against it too. Over the quota: a PreflightError saying how much is needed and how to
   ask for more.

Where Service Quotas cannot answer (no permission, unreachable, an emulator without EC2 quotas:
moto 5 knows only VPC quotas) the run is not refused: the report carries a warning saying the
quota was not checked, and why. Failures of the EC2 calls themselves are errors, as everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from loadorch.cloud.aws import AWS_FAILURES, aws_client, aws_errors, error_code
from loadorch.errors import PreflightError, SpikeError

ON_DEMAND_STANDARD_QUOTA = "L-1216C47A"  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances
SPOT_STANDARD_QUOTA = "L-34B43A08"  # All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests
QUOTA_SERVICE_CODE = "ec2"
# Standard families: a letter of the quota's list followed by the generation digit (c6i, t3, r7iz,
# z1d), plus the two storage families whose names carry more letters. inf1, dl1, trn1, hpc6a, x2gd,
# p5, g6, f1, vt1, mac2 and u-* have quotas of their own.
_STANDARD_FAMILY = re.compile(r"^([acdhimrtz]\d|im4gn$|is4gen$)")
# Graviton (arm64) families: the generation digit followed by g (c7g, m6gd, t4g, c6gn), and a1.
_ARM_FAMILY = re.compile(r"^([a-z]+\d+g[a-z]*|a1)$")
# Offered alternatives, in the order they are suggested: compute first, then general purpose.
_X86_ALTERNATIVES = ("c7i", "c6i", "c7a", "c6a", "m7i", "m6i", "m6a", "t3", "t3a", "c5", "m5")
_ARM_ALTERNATIVES = ("c7g", "c6g", "m7g", "m6g", "t4g")
_MAX_SUGGESTIONS = 3
_DESCRIBE_BATCH = 100  # DescribeInstanceTypes takes at most 100 types per call
_LIVE_STATES = ("pending", "running")


@dataclass(frozen=True)
class RegionCapacity:
    """One region's vCPU figures: what the plan needs, what the account already runs, the quota.

    `in_use_vcpus` and `quota_vcpus` are None where the quota could not be checked (see the
    report's warnings).
    """

    region: str
    instance_type: str
    instances: int
    vcpus_per_instance: int
    architectures: tuple[str, ...]
    quota_code: str | None
    quota_vcpus: float | None
    in_use_vcpus: int | None

    @property
    def planned_vcpus(self) -> int:
        return self.instances * self.vcpus_per_instance

    @property
    def fits(self) -> bool | None:
        """True or False when the quota is known; None when it could not be checked."""
        if self.quota_vcpus is None or self.in_use_vcpus is None:
            return None
        return self.planned_vcpus + self.in_use_vcpus <= self.quota_vcpus

    def describe(self) -> str:
        text = (
            f"{self.region}: {self.instances} x {self.instance_type} = {self.planned_vcpus} vCPUs "
            f"({self.vcpus_per_instance} each)"
        )
        if self.quota_vcpus is not None and self.in_use_vcpus is not None:
            text += f"; quota {self.quota_vcpus:g} ({self.quota_code}), {self.in_use_vcpus} already in use"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "instance_type": self.instance_type,
            "instances": self.instances,
            "vcpus_per_instance": self.vcpus_per_instance,
            "planned_vcpus": self.planned_vcpus,
            "architectures": list(self.architectures),
            "quota_code": self.quota_code,
            "quota_vcpus": self.quota_vcpus,
            "in_use_vcpus": self.in_use_vcpus,
        }


@dataclass(frozen=True)
class CapacityReport:
    """The capacity preflight's answer when it did not refuse: per-region figures and warnings
    (one per region whose vCPU quota could not be checked, saying why)."""

    spot: bool
    regions: tuple[RegionCapacity, ...]
    warnings: tuple[str, ...]

    @property
    def planned_vcpus(self) -> int:
        return sum(r.planned_vcpus for r in self.regions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spot": self.spot,
            "planned_vcpus": self.planned_vcpus,
            "regions": [r.to_dict() for r in self.regions],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class _Problem:
    region: str
    what: str
    fix: str


@dataclass(frozen=True)
class _RegionAnswer:
    capacity: RegionCapacity | None
    problem: _Problem | None
    warning: str | None


def is_standard_family(instance_type: str) -> bool:
    """Whether the type counts against the Standard (A, C, D, H, I, M, R, T, Z) vCPU quotas."""
    return bool(_STANDARD_FAMILY.match(instance_type.split(".", 1)[0]))


def quota_code(spot: bool) -> str:
    """The Service Quotas code of the standard families' vCPU quota for the market."""
    return SPOT_STANDARD_QUOTA if spot else ON_DEMAND_STANDARD_QUOTA


def check_capacity(
    counts: Mapping[str, int],
    instance_type: str | Mapping[str, str],
    *,
    spot: bool,
    endpoint: str | None = None,
) -> CapacityReport:
    """Refuse (PreflightError) a fleet of `counts` (region -> instances) whose type is not offered
    in a region, or that does not fit the region's vCPU quota; otherwise report the figures.

    `instance_type` is one type for every region, or a map region -> type. Regions with no
    instances are not asked about. Every refusal found is in the one error, region by region.
    """
    wanted = {region: n for region, n in counts.items() if n > 0}
    types = {
        region: instance_type if isinstance(instance_type, str) else instance_type[region]
        for region in wanted
    }
    if not wanted:
        return CapacityReport(spot, (), ())
    with ThreadPoolExecutor(max_workers=min(8, len(wanted)), thread_name_prefix="capacity") as pool:
        futures = {
            region: pool.submit(_check_region, region, types[region], n, spot, endpoint)
            for region, n in wanted.items()
        }
        answers: dict[str, _RegionAnswer] = {}
        failure: SpikeError | None = None
        for region, future in futures.items():
            try:
                answers[region] = future.result()
            except SpikeError as exc:
                failure = failure or exc
    if failure is not None:
        raise failure
    problems = [a.problem for a in answers.values() if a.problem is not None]
    if problems:
        raise PreflightError(
            "; ".join(p.what for p in problems),
            where=f"capacity preflight ({', '.join(p.region for p in problems)})",
            fix="; ".join(p.fix for p in problems),
        )
    return CapacityReport(
        spot=spot,
        regions=tuple(a.capacity for a in answers.values() if a.capacity is not None),
        warnings=tuple(a.warning for a in answers.values() if a.warning is not None),
    )


def _check_region(
    region: str, instance_type: str, instances: int, spot: bool, endpoint: str | None
) -> _RegionAnswer:
    ec2 = aws_client("ec2", region, endpoint)
    if not _offered(ec2, region, [instance_type]):
        return _RegionAnswer(None, _not_offered(ec2, region, instance_type), None)
    info = _describe_types(ec2, region, [instance_type])[instance_type]
    vcpus = int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0))
    architectures = tuple(str(a) for a in info.get("ProcessorInfo", {}).get("SupportedArchitectures", []))
    code = quota_code(spot)
    base = RegionCapacity(region, instance_type, instances, vcpus, architectures, None, None, None)
    if not is_standard_family(instance_type):
        why = (
            f"{instance_type} is not in the standard families (A, C, D, H, I, M, R, T, Z) that quota {code} "
            "covers; its family has a vCPU quota of its own: check it in the Service Quotas console"
        )
        return _RegionAnswer(base, None, f"vCPU quota not checked in {region}: {why}")
    quota, why_not = _quota_vcpus(region, code, endpoint)
    if quota is None:
        return _RegionAnswer(base, None, f"vCPU quota not checked in {region}: {why_not}")
    in_use = _vcpus_in_use(ec2, region, spot)
    capacity = RegionCapacity(region, instance_type, instances, vcpus, architectures, code, quota, in_use)
    if capacity.fits:
        return _RegionAnswer(capacity, None, None)
    market = "spot" if spot else "on-demand"
    needed = capacity.planned_vcpus + in_use
    problem = _Problem(
        region,
        f"the run needs {capacity.planned_vcpus} {market} vCPUs in {region} ({instances} x {instance_type}, "
        f"{vcpus} each) and {in_use} are already in use there, {needed} in all, over the account's quota of "
        f"{quota:g} vCPUs ({code})",
        f"ask for more (`aws service-quotas request-service-quota-increase --service-code {QUOTA_SERVICE_CODE} "
        f"--quota-code {code} --desired-value {math.ceil(needed)} --region {region}`), or plan fewer vCPUs in "
        f"{region}: a smaller --instance-type, a higher injector.max_rate_per_s in the profile, or a lower "
        "weight for the region",
    )
    return _RegionAnswer(capacity, problem, None)


def _offered(ec2: Any, region: str, candidates: Sequence[str]) -> list[str]:
    """Those of `candidates` that EC2 offers in `region`, in the order given."""
    found: set[str] = set()
    with aws_errors(f"ec2 describe_instance_type_offerings in {region}"):
        paginator = ec2.get_paginator("describe_instance_type_offerings")
        pages = paginator.paginate(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": list(candidates)}]
        )
        for page in pages:
            found.update(str(o["InstanceType"]) for o in page.get("InstanceTypeOfferings", []))
    return [c for c in candidates if c in found]


def _not_offered(ec2: Any, region: str, instance_type: str) -> _Problem:
    family, _, size = instance_type.partition(".")
    families = _ARM_ALTERNATIVES if _ARM_FAMILY.match(family) else _X86_ALTERNATIVES
    same_size = [f"{f}.{size}" for f in families if f != family]
    same_family = [f"{family}.{s}" for s in ("large", "xlarge", "medium", "2xlarge") if s != size]
    offered = _offered(ec2, region, [*same_size, *same_family])[:_MAX_SUGGESTIONS]
    if offered:
        choice = f"choose a type EC2 offers in {region}, e.g. --instance-type {' or '.join(offered)}"
    else:
        choice = (
            f"choose a type EC2 offers in {region} (`aws ec2 describe-instance-type-offerings "
            f"--location-type region --region {region}` lists them)"
        )
    return _Problem(
        region,
        f"EC2 does not offer {instance_type} in {region}",
        f"{choice}, or leave {region} out of --regions",
    )


def _describe_types(ec2: Any, region: str, types: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """DescribeInstanceTypes for `types`, keyed by type."""
    found: dict[str, Mapping[str, Any]] = {}
    unique = sorted(set(types))
    with aws_errors(f"ec2 describe_instance_types in {region}"):
        for start in range(0, len(unique), _DESCRIBE_BATCH):
            paginator = ec2.get_paginator("describe_instance_types")
            for page in paginator.paginate(InstanceTypes=unique[start : start + _DESCRIBE_BATCH]):
                for info in page.get("InstanceTypes", []):
                    found[str(info["InstanceType"])] = info
    return found


def _vcpus_in_use(ec2: Any, region: str, spot: bool) -> int:
    """vCPUs of the account's live (pending, running) standard-family instances of the market."""
    live: list[tuple[str, int | None]] = []
    with aws_errors(f"ec2 describe_instances in {region}"):
        paginator = ec2.get_paginator("describe_instances")
        filters = [{"Name": "instance-state-name", "Values": list(_LIVE_STATES)}]
        for page in paginator.paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    if (instance.get("InstanceLifecycle") == "spot") != spot:
                        continue
                    kind = str(instance.get("InstanceType", ""))
                    if not is_standard_family(kind):
                        continue
                    cpu = instance.get("CpuOptions") or {}
                    cores, threads = cpu.get("CoreCount"), cpu.get("ThreadsPerCore")
                    live.append((kind, int(cores) * int(threads) if cores and threads else None))
    unknown = [kind for kind, vcpus in live if vcpus is None]
    defaults = _describe_types(ec2, region, unknown) if unknown else {}
    return sum(
        vcpus if vcpus is not None else int(defaults.get(kind, {}).get("VCpuInfo", {}).get("DefaultVCpus", 0))
        for kind, vcpus in live
    )


def _quota_vcpus(region: str, code: str, endpoint: str | None) -> tuple[float | None, str]:
    """The quota's value in vCPUs, or None and why it could not be read."""
    try:
        client = aws_client("service-quotas", region, endpoint)
        answer = client.get_service_quota(ServiceCode=QUOTA_SERVICE_CODE, QuotaCode=code)
    except botocore.exceptions.ClientError as exc:
        error = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if error in {"AccessDenied", "AccessDeniedException"}:
            return None, (
                f"Service Quotas refused GetServiceQuota ({error}: {message}); allow servicequotas:GetServiceQuota "
                "to have it checked"
            )
        if error == "NoSuchResourceException":
            return (
                None,
                f"Service Quotas has no value for {QUOTA_SERVICE_CODE} quota {code} ({error}: {message})",
            )
        return None, f"Service Quotas GetServiceQuota failed ({error or 'error'}: {message})"
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
        return None, f"Service Quotas cannot be reached ({exc})"
    except AWS_FAILURES as exc:
        return None, f"Service Quotas GetServiceQuota failed ({exc})"
    value = answer.get("Quota", {}).get("Value")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None, f"Service Quotas answered without a value for {code}: {answer.get('Quota')!r}"
    return float(value), ""
