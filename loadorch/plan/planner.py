"""Profile + options -> Plan. Pure: no clock, network, files or environment.

The caller passes `now_ms`; the same profile and options give the same Plan.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from loadorch.curve import RateCurve
from loadorch.errors import BadInputError
from loadorch.plan.model import InjectorPlan, Plan, RegionPlan
from loadorch.plan.shapes import profile_curve
from loadorch.profiles.model import Profile, Region

# `--max-injectors`: 64 by default, a guard against a profile typo planning a fleet by accident.
DEFAULT_MAX_INJECTORS = 64
# The most spike will plan at all: 5 regions (what AWS's own Distributed Load Testing spans) of
# the 100 injectors per region the Terraform configuration allows. Beyond that this one operator
# machine, which holds an SSH session to every injector, fetches and merges every simulation.log
# and checks every clock, becomes the bottleneck rather than the injectors.
MAX_INJECTORS_LIMIT = 500


@dataclass(frozen=True)
class PlanOptions:
    """What the operator chose on the command line."""

    now_ms: int
    provider: str = "local"
    regions: tuple[str, ...] = ()
    target: str | None = None
    start_lead_s: float = 3.0
    max_injectors: int = DEFAULT_MAX_INJECTORS


def plan_run(profile: Profile, options: PlanOptions) -> Plan:
    """Turn a profile into a Plan: curve, regions, injectors, run id and start time."""
    _check_cap(options.max_injectors)
    curve = profile_curve(profile)
    regions = _regions(profile, options.regions)
    total_weight = sum(r.weight for r in regions)
    region_plans = []
    for region in regions:
        share = region.weight / total_weight
        region_curve = curve.scaled(share)
        count = max(1, math.ceil(region_curve.peak_rate / profile.injector.max_rate_per_s - 1e-9))
        shard = region_curve.scaled(1 / count)
        injectors = tuple(
            InjectorPlan(id=f"{region.name}-{i + 1}", region=region.name, index=i + 1, curve=shard)
            for i in range(count)
        )
        region_plans.append(RegionPlan(region.name, region.weight, share, region_curve, injectors))
    total = sum(len(r.injectors) for r in region_plans)
    if total > options.max_injectors:
        raise _over_cap(total, options.max_injectors, region_plans, profile.injector.max_rate_per_s)
    digest = profile_digest(profile)
    base_url = (options.target or profile.target.base_url).rstrip("/")
    run_key = json.dumps(
        [digest, options.provider, [r.name for r in regions], base_url, options.now_ms], sort_keys=True
    )
    stamp = datetime.fromtimestamp(options.now_ms / 1000, tz=UTC).strftime("%Y%m%d-%H%M%S")
    run_id = f"{profile.name}-{stamp}-{hashlib.sha256(run_key.encode()).hexdigest()[:6]}"
    return Plan(
        run_id=run_id,
        profile_name=profile.name,
        profile_digest=digest,
        provider=options.provider,
        base_url=base_url,
        start_at_ms=options.now_ms + round(options.start_lead_s * 1000),
        curve=curve,
        requests_per_user=profile.scenario.requests_per_user,
        regions=tuple(region_plans),
    )


def _check_cap(cap: int) -> None:
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_INJECTORS_LIMIT:
        raise BadInputError(
            f"--max-injectors must be a whole number from 1 to {MAX_INJECTORS_LIMIT}, not {cap!r}",
            where="--max-injectors",
            fix=f"give e.g. --max-injectors {DEFAULT_MAX_INJECTORS} (the default)",
        )


def _over_cap(total: int, cap: int, regions: list[RegionPlan], max_rate_per_s: float) -> BadInputError:
    """The refusal of a plan larger than `cap`: what it needs, the largest plan allowed, the fixes."""
    per_region = ", ".join(f"{r.name} {len(r.injectors)}" for r in regions)
    largest = f"the largest plan allowed has {cap} injectors, about {cap * max_rate_per_s:,.0f} users/s at "
    largest += f"injector.max_rate_per_s {max_rate_per_s:g}"
    profile_fixes = "raise injector.max_rate_per_s in the profile (what one injector can inject), or lower the profile's rates"
    if total <= MAX_INJECTORS_LIMIT:
        fix = f"raise --max-injectors to {total} or more (at most {MAX_INJECTORS_LIMIT}), or {profile_fixes}"
    else:
        fix = f"{profile_fixes}, or use fewer regions: --max-injectors goes up to {MAX_INJECTORS_LIMIT} only"
    return BadInputError(
        f"the plan needs {total} injectors ({per_region}), more than --max-injectors {cap} allows; {largest}",
        where="--max-injectors",
        fix=fix,
    )


def profile_digest(profile: Profile) -> str:
    return hashlib.sha256(profile.model_dump_json().encode()).hexdigest()[:16]


def _regions(profile: Profile, chosen: tuple[str, ...]) -> tuple[Region, ...]:
    if not chosen:
        return profile.regions
    if len(set(chosen)) != len(chosen):
        raise BadInputError(f"--regions names a region twice: {','.join(chosen)}")
    by_name = {r.name: r for r in profile.regions}
    out = []
    for name in chosen:
        if not name or not all(c.isalnum() or c == "-" for c in name):
            raise BadInputError(
                f"invalid region name {name!r}", fix="use names like eu-west-2 (letters, digits, '-')"
            )
        out.append(by_name.get(name, Region(name=name.lower())))
    return tuple(out)


def chart(curve: RateCurve, width: int = 60, height: int = 8) -> list[str]:
    """A small text chart of the curve (rate over time), for `spike plan`."""
    duration = curve.duration_s
    columns = [curve.rate_at(duration * (i + 0.5) / width) for i in range(width)]
    peak = max(columns) or 1.0
    blocks = " ▁▂▃▄▅▆▇█"
    rows = []
    for row in range(height - 1, -1, -1):
        line = ""
        for value in columns:
            level = value / peak * height - row
            line += blocks[max(0, min(8, round(level * 8)))] if level > 0 else " "
        label = f"{peak * (row + 1) / height:8.1f} |" if row in (height - 1, 0) else "         |"
        rows.append(label + line)
    rows.append("         +" + "-" * width)
    rows.append(f"          0 s{' ' * (width - 12)}{duration:.0f} s")
    return rows
