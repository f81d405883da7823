"""What a run will cost, and the guards that refuse a run before anything is created. Pure.

Billing model (EC2 Linux): each instance is billed per second with a 60 s minimum, from launch
until it is terminated. An injector lives for `boot_s` (launch, provisioning, deploy, waiting for
the shared start) plus the plan's load duration plus `teardown_s` (collecting results,
destroying). Its root volume (gp3) is billed for the same time, pro rata of a 730-hour month,
AWS's own convention for monthly prices.

Spot runs are estimated at the table's typical spot price where it has one; where it has none,
at on-demand, which is the most a spot request pays by default (the module sets no max price).

The worst case is what the run costs if spike dies right after apply: nobody destroys the
fleet, every injector lives until its TTL shutdown (the module's `shutdown -h +TTL` at first
boot, with shutdown behaviour `terminate`, which also deletes the root volume) and is billed
at on-demand, the ceiling for spot too.

Nothing here reads a clock, a file or the network: prices arrive as a `PriceTable` (loaded or
refreshed by `loadorch.cloud.pricing`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from loadorch.errors import BadInputError
from loadorch.plan.model import Plan
from loadorch.plan.prices import REFRESH_HINT, PriceTable

MIN_BILLED_S = 60
HOURS_PER_MONTH = 730.0
# Injectors terminate themselves at their TTL; the run must end well before, or they vanish mid-run.
MIN_TTL_MARGIN_S = 300.0
TTL_MARGIN_FRACTION = 0.10
# The TTL counts from when user_data schedules the shutdown, not from launch (when billing
# starts): allow for the boot up to cloud-init's user_data, and for the power-off itself.
WORST_CASE_BOOT_SLACK_S = 300.0
# The smallest TTL the module accepts (variables.tf ttl_minutes validation).
MIN_TTL_MINUTES = 10
# An operator CIDR wider than this is refused unless forced: SSH open to a huge range.
WIDE_IPV4_PREFIX = 16
WIDE_IPV6_PREFIX = 48
# Wider than this is refused even when forced (it includes 0.0.0.0/0 and ::/0).
MIN_IPV4_PREFIX = 8
MIN_IPV6_PREFIX = 32
FORCE_WIDE_FLAG = "--allow-wide-operator-cidr"


ON_DEMAND = "on-demand"
SPOT = "spot"
SPOT_CEILING = "spot at on-demand ceiling"


@dataclass(frozen=True)
class RegionCost:
    """One region's share of a run's cost.

    `usd_per_instance_h` is the rate the estimate uses (`market` says which: on-demand, typical
    spot, or on-demand as the ceiling of an unknown spot price); the worst case always uses
    `on_demand_usd_per_h`.
    """

    region: str
    instances: int
    usd_per_instance_h: float
    instance_hours: float
    compute_usd: float
    storage_usd: float
    on_demand_usd_per_h: float = 0.0
    gp3_usd_per_gb_month: float = 0.0
    market: str = ON_DEMAND
    worst_case_usd: float | None = None

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.storage_usd

    def ceiling_usd_per_s(self, root_gb: int) -> float:
        """What the region's instances cost together per second at on-demand, volumes included."""
        per_h = self.on_demand_usd_per_h + root_gb * self.gp3_usd_per_gb_month / HOURS_PER_MONTH
        return self.instances * per_h / 3600


@dataclass(frozen=True)
class CostEstimate:
    """What a run's injectors will cost: per region and in total, in USD, and at worst.

    `worst_case_usd` is None when no TTL was given (nothing bounds the fleet's life then).
    """

    instance_type: str
    billed_s_per_instance: int
    root_gb: int
    regions: tuple[RegionCost, ...]
    prices_taken_on: str
    use_spot: bool = False
    lifetime_s: float = 0.0
    ttl_minutes: float | None = None
    worst_case_billed_s: int | None = None
    prices_approximate: bool = False
    prices_origin: str = "built in"

    @property
    def instances(self) -> int:
        return sum(r.instances for r in self.regions)

    @property
    def instance_hours(self) -> float:
        return sum(r.instance_hours for r in self.regions)

    @property
    def total_usd(self) -> float:
        return sum(r.total_usd for r in self.regions)

    @property
    def worst_case_usd(self) -> float | None:
        if self.worst_case_billed_s is None:
            return None
        return sum(r.worst_case_usd or 0.0 for r in self.regions)

    @property
    def spot_unknown_regions(self) -> tuple[str, ...]:
        """Regions of a spot run estimated at on-demand because no spot figure is known."""
        return tuple(r.region for r in self.regions if r.market == SPOT_CEILING)

    def worst_case_at(self, ttl_minutes: float) -> float:
        """The worst case had the injectors a TTL of `ttl_minutes`."""
        billed_s = worst_case_seconds(ttl_minutes, self.lifetime_s)
        return sum(r.ceiling_usd_per_s(self.root_gb) for r in self.regions) * billed_s

    def basis(self) -> tuple[str, ...]:
        """Sentences saying what the figures rest on, for the CLI to print under the numbers."""
        lines = [
            f"each injector is billed {self.billed_s_per_instance} s (boot, load, teardown) with a "
            f"{self.root_gb} GB gp3 root volume",
        ]
        if self.worst_case_billed_s is not None and self.ttl_minutes is not None:
            lines.append(
                f"worst case if spike dies: every injector lives to its TTL of {_minutes(self.ttl_minutes * 60)} "
                f"(+{_minutes(WORST_CASE_BOOT_SLACK_S)} until the TTL clock starts at boot), "
                f"{self.worst_case_billed_s} s each at on-demand, then powers itself off and is deleted"
            )
        if self.use_spot:
            unknown = self.spot_unknown_regions
            if unknown:
                lines.append(
                    f"spot price unknown for {self.instance_type} in {', '.join(unknown)}: on-demand used as "
                    "the ceiling (a spot request pays at most on-demand)"
                )
            if len(unknown) < len([r for r in self.regions if r.instances]):
                lines.append(
                    "spot estimated at a typical spot price (it moves by zone and hour); the worst case "
                    "uses on-demand, the most spot can cost"
                )
        kind = "approximate list prices" if self.prices_approximate else "prices"
        lines.append(
            f"{kind} as of {self.prices_taken_on} ({self.prices_origin}); `{REFRESH_HINT}` fetches "
            "current on-demand prices from the AWS Pricing API"
        )
        return tuple(lines)

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst_case_usd
        return {
            "instance_type": self.instance_type,
            "use_spot": self.use_spot,
            "billed_s_per_instance": self.billed_s_per_instance,
            "root_gb": self.root_gb,
            "prices_taken_on": self.prices_taken_on,
            "prices_approximate": self.prices_approximate,
            "instances": self.instances,
            "instance_hours": round(self.instance_hours, 6),
            "total_usd": round(self.total_usd, 6),
            "ttl_minutes": self.ttl_minutes,
            "worst_case_billed_s": self.worst_case_billed_s,
            "worst_case_usd": None if worst is None else round(worst, 6),
            "regions": [
                {
                    "region": r.region,
                    "instances": r.instances,
                    "market": r.market,
                    "usd_per_instance_h": r.usd_per_instance_h,
                    "on_demand_usd_per_h": r.on_demand_usd_per_h,
                    "instance_hours": round(r.instance_hours, 6),
                    "compute_usd": round(r.compute_usd, 6),
                    "storage_usd": round(r.storage_usd, 6),
                    "total_usd": round(r.total_usd, 6),
                    "worst_case_usd": None if r.worst_case_usd is None else round(r.worst_case_usd, 6),
                }
                for r in self.regions
            ],
        }


def billed_seconds(lifetime_s: float) -> int:
    """Seconds EC2 bills for one Linux instance alive `lifetime_s`: whole seconds, 60 at least."""
    return max(MIN_BILLED_S, math.ceil(lifetime_s))


def worst_case_seconds(ttl_minutes: float, lifetime_s: float = 0.0) -> int:
    """Seconds billed per injector if nobody destroys it: its TTL plus the boot slack.

    Never less than the planned lifetime: the worst case is not cheaper than the estimate.
    """
    return billed_seconds(max(ttl_minutes * 60 + WORST_CASE_BOOT_SLACK_S, lifetime_s))


def estimate_cost(
    plan: Plan,
    instance_type: str,
    prices: PriceTable,
    *,
    boot_s: float,
    teardown_s: float,
    root_gb: int,
    use_spot: bool = False,
    ttl_minutes: float | None = None,
    region_types: Mapping[str, str] | None = None,
) -> CostEstimate:
    """The cost of running `plan`'s injectors as `instance_type`, per region and in total.

    `region_types` names another type for some regions (a Graviton type where it is offered).

    `root_gb` is the root volume size actually created per injector. With `use_spot` the estimate
    is at the table's typical spot price, or at on-demand where it has none. With `ttl_minutes`
    the worst case (spike dies, every injector lives to its TTL) is computed too.

    Raises BadInputError before any AWS call when the table lacks the type or a region.
    """
    _require_non_negative(boot_s=boot_s, teardown_s=teardown_s, root_gb=root_gb)
    if ttl_minutes is not None and (not math.isfinite(ttl_minutes) or ttl_minutes <= 0):
        raise BadInputError(f"--ttl must be a number of minutes > 0, not {ttl_minutes}")
    lifetime_s = boot_s + plan.duration_s + teardown_s
    billed_s = billed_seconds(lifetime_s)
    worst_s = None if ttl_minutes is None else worst_case_seconds(ttl_minutes, lifetime_s)
    regions = []
    for region in plan.regions:
        count = len(region.injectors)
        if count == 0:
            # A region without injectors costs nothing, whatever the table knows about it.
            regions.append(
                RegionCost(
                    region.name, 0, 0.0, 0.0, 0.0, 0.0, worst_case_usd=None if worst_s is None else 0.0
                )
            )
            continue
        kind = (region_types or {}).get(region.name, instance_type)
        on_demand = prices.instance_price(region.name, kind)
        gp3_usd = prices.gp3_price(region.name)
        usd_per_h, market = on_demand, ON_DEMAND
        if use_spot:
            spot = prices.spot_price(region.name, kind)
            usd_per_h, market = (on_demand, SPOT_CEILING) if spot is None else (spot, SPOT)
        instance_hours = count * billed_s / 3600
        cost = RegionCost(
            region=region.name,
            instances=count,
            usd_per_instance_h=usd_per_h,
            instance_hours=instance_hours,
            compute_usd=instance_hours * usd_per_h,
            storage_usd=root_gb * gp3_usd * instance_hours / HOURS_PER_MONTH,
            on_demand_usd_per_h=on_demand,
            gp3_usd_per_gb_month=gp3_usd,
            market=market,
        )
        if worst_s is not None:
            cost = _with_worst_case(cost, root_gb, worst_s)
        regions.append(cost)
    return CostEstimate(
        instance_type=instance_type,
        billed_s_per_instance=billed_s,
        root_gb=root_gb,
        regions=tuple(regions),
        prices_taken_on=prices.taken_on,
        use_spot=use_spot,
        lifetime_s=lifetime_s,
        ttl_minutes=ttl_minutes,
        worst_case_billed_s=worst_s,
        prices_approximate=prices.approximate,
        prices_origin=prices.origin,
    )


def _with_worst_case(cost: RegionCost, root_gb: int, billed_s: int) -> RegionCost:
    return replace(cost, worst_case_usd=cost.ceiling_usd_per_s(root_gb) * billed_s)


def check_budget(estimate: CostEstimate, max_cost: float | None) -> None:
    """Refuse a run whose estimate, or whose worst case if spike dies, exceeds `max_cost` USD.

    None: no budget. Both figures are in the message, and the fixes that would help.
    """
    if max_cost is None:
        return
    if not math.isfinite(max_cost) or max_cost < 0:
        raise BadInputError(f"--max-cost must be a number of USD >= 0, not {max_cost}")
    worst = estimate.worst_case_usd
    needed = max(estimate.total_usd, worst or 0.0)
    ttl_text = "" if estimate.ttl_minutes is None else f"TTL of {_minutes(estimate.ttl_minutes * 60)}"
    if estimate.total_usd > max_cost:
        breakdown = ", ".join(
            f"{r.region} ${r.total_usd:.2f} ({r.instances} x {estimate.instance_type})"
            for r in estimate.regions
        )
        worst_text = (
            ""
            if worst is None
            else f" (worst case ${worst:.2f} if spike dies and every injector lives to its {ttl_text})"
        )
        raise BadInputError(
            f"the run would cost about ${estimate.total_usd:.2f}{worst_text}, over the budget of ${max_cost:.2f} "
            f"({breakdown}; {estimate.billed_s_per_instance} s billed per instance)",
            fix=f"raise --max-cost to at least {_cents_up(needed):.2f}, or use fewer regions or injectors, "
            "a shorter profile or a smaller instance type",
        )
    if worst is None or worst <= max_cost:
        return
    breakdown = ", ".join(
        f"{r.region} ${r.worst_case_usd or 0.0:.2f} ({r.instances} x {estimate.instance_type})"
        for r in estimate.regions
    )
    fixes = []
    longest = _longest_ttl_within(estimate, max_cost)
    shortest = min_ttl_minutes(estimate.lifetime_s)
    if longest is not None and longest >= shortest:
        fixes.append(f"lower --ttl to {longest} minutes or less (the run needs at least {shortest})")
    fixes.append("use fewer injectors (fewer regions, or a higher injector.max_rate_per_s in the profile)")
    fixes.append(f"raise --max-cost to at least {_cents_up(needed):.2f}")
    raise BadInputError(
        f"the run would cost about ${estimate.total_usd:.2f}, within the budget of ${max_cost:.2f}, but if spike "
        f"dies every injector lives to its {ttl_text} and the worst case is ${worst:.2f}, over the budget "
        f"({breakdown}; {estimate.worst_case_billed_s} s billed per instance at on-demand)",
        fix=", or ".join(fixes),
    )


def _longest_ttl_within(estimate: CostEstimate, max_cost: float) -> int | None:
    """The longest whole-minute TTL whose worst case fits `max_cost`; None if not even the minimum does."""
    per_s = sum(r.ceiling_usd_per_s(estimate.root_gb) for r in estimate.regions)
    if per_s <= 0:
        return None
    minutes = math.floor((max_cost / per_s - WORST_CASE_BOOT_SLACK_S) / 60)
    # The closed form ignores whole-second billing; step down until the real figure fits.
    while minutes >= MIN_TTL_MINUTES and estimate.worst_case_at(minutes) > max_cost:
        minutes -= 1
    return minutes if minutes >= MIN_TTL_MINUTES else None


def ttl_margin_s(run_s: float) -> float:
    """The safety margin between a run's end and its injectors' TTL: 10% of the run, 5 min at least."""
    return max(MIN_TTL_MARGIN_S, TTL_MARGIN_FRACTION * run_s)


def min_ttl_minutes(run_s: float) -> int:
    """The shortest TTL (whole minutes) that a run of `run_s` fits in with its safety margin."""
    return max(MIN_TTL_MINUTES, math.ceil(round((run_s + ttl_margin_s(run_s)) / 60, 6)))


def check_ttl(plan: Plan, ttl_minutes: float, boot_s: float, teardown_s: float) -> None:
    """Refuse a run that would not end (boot + load + teardown + margin) inside the injectors' TTL."""
    _require_non_negative(boot_s=boot_s, teardown_s=teardown_s)
    if not math.isfinite(ttl_minutes) or ttl_minutes <= 0:
        raise BadInputError(f"--ttl must be a number of minutes > 0, not {ttl_minutes}")
    run_s = boot_s + plan.duration_s + teardown_s
    margin_s = ttl_margin_s(run_s)
    needed_s = run_s + margin_s
    if needed_s <= ttl_minutes * 60:
        return
    raise BadInputError(
        f"the run lasts about {_minutes(run_s)} (boot {_minutes(boot_s)} + load {_minutes(plan.duration_s)} "
        f"+ teardown {_minutes(teardown_s)}); with a {_minutes(margin_s)} safety margin it needs "
        f"{_minutes(needed_s)}, longer than the injectors' TTL of {_minutes(ttl_minutes * 60)}",
        fix=f"raise --ttl to at least {math.ceil(round(needed_s / 60, 6))} minutes, or shorten the profile",
    )


def check_operator_cidr(cidr: str, force_wide: bool = False) -> str:
    """The network allowed to reach the injectors' SSH, normalised ("203.0.113.7" -> "203.0.113.7/32").

    Refuses what is not a CIDR or an address; anything wider than /16 (IPv4) or /48 (IPv6) unless
    `force_wide`; and, even forced, anything wider than /8 (IPv4) or /32 (IPv6), which includes
    0.0.0.0/0 and ::/0.
    """
    text = cidr.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadInputError(
            f"operator CIDR {cidr!r} is neither a CIDR nor an IP address",
            fix="give your public address (e.g. 203.0.113.7, which becomes 203.0.113.7/32) or a CIDR like 203.0.113.0/24",
        ) from None
    v4 = network.version == 4
    floor, wide = (MIN_IPV4_PREFIX, WIDE_IPV4_PREFIX) if v4 else (MIN_IPV6_PREFIX, WIDE_IPV6_PREFIX)
    reach = "the whole internet" if network.prefixlen == 0 else f"{network.num_addresses:,} addresses"
    if network.prefixlen < floor:
        raise BadInputError(
            f"operator CIDR {network} would open the injectors' SSH to {reach}; spike refuses anything "
            f"wider than /{floor} for IPv{network.version}, even with {FORCE_WIDE_FLAG}",
            fix="give your own public address (it becomes a /32) or your office's CIDR",
        )
    if network.prefixlen < wide and not force_wide:
        raise BadInputError(
            f"operator CIDR {network} would open the injectors' SSH to {reach}, far more than the machines "
            f"that deploy and collect; spike refuses anything wider than /{wide} for IPv{network.version} "
            "unless told to",
            fix=f"give your own public address (it becomes a /32) or your office's CIDR (/{wide} or narrower); "
            f"if this range really is yours, add {FORCE_WIDE_FLAG}",
        )
    return str(network)


def _require_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise BadInputError(f"{name} must be a number >= 0, not {value}")


def _cents_up(usd: float) -> float:
    # Rounded first, so that float noise (1.8600000000000003) does not add a cent.
    return math.ceil(round(usd * 100, 6)) / 100


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds % 60 else f"{seconds / 60:.0f} min"
