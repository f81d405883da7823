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


@dataclass(frozen=True)
class PlanOptions:
    """What the operator chose on the command line."""

    now_ms: int
    provider: str = "local"
    regions: tuple[str, ...] = ()
    target: str | None = None
    start_lead_s: float = 3.0
    max_injectors: int = 64


def plan_run(profile: Profile, options: PlanOptions) -> Plan:
    """Turn a profile into a Plan: curve, regions, injectors, run id and start time."""
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
        raise BadInputError(
            f"the plan needs {total} injectors, more than the limit of {options.max_injectors}",
            fix="raise injector.max_rate_per_s in the profile (what one injector can inject), or lower the "
            "profile's rates",
        )
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
