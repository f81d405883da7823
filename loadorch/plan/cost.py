"""What a run will cost, and the guards that refuse a run before anything is created. Pure.

Billing model (EC2 Linux on-demand): each instance is billed per second with a
60 s minimum, from launch until it is terminated. An injector lives for
`boot_s` (launch, provisioning, deploy, waiting for the shared start) plus the
plan's load duration plus `teardown_s` (collecting results, destroying). Its
root volume (gp3) is billed for the same time, pro rata of a 730-hour month,
AWS's own convention for monthly prices.

Nothing here reads a clock, a file or the network: prices arrive as a
`PriceTable` (loaded or refreshed by `loadorch.cloud.pricing`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadorch.errors import BadInputError
from loadorch.plan.model import Plan

MIN_BILLED_S = 60
HOURS_PER_MONTH = 730.0
# Injectors terminate themselves at their TTL; the run must end well before, or they vanish mid-run.
MIN_TTL_MARGIN_S = 300.0
TTL_MARGIN_FRACTION = 0.10
# Wider than this lets (nearly) anyone reach the injectors' SSH and agent ports.
MIN_IPV4_PREFIX = 8
MIN_IPV6_PREFIX = 32

REFRESH_HINT = "spike prices --refresh"


@dataclass(frozen=True)
class PriceTable:
    """On-demand prices in USD: Linux instance-hours per region and type, gp3 GB-months per region.

    `taken_on` is the date the figures were taken (YYYY-MM-DD), `note` says where they come from,
    `origin` where this table was loaded from (for messages).
    """

    taken_on: str
    note: str
    instance_usd_per_h: Mapping[str, Mapping[str, float]]
    ebs_gp3_usd_per_gb_month: Mapping[str, float]
    origin: str = "built in"

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(self.instance_usd_per_h))

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(sorted({t for types in self.instance_usd_per_h.values() for t in types}))

    def instance_price(self, region: str, instance_type: str) -> float:
        """USD per hour of `instance_type` in `region`; BadInputError naming what is missing."""
        where = f"price table ({self.origin}, taken on {self.taken_on})"
        types = self.instance_usd_per_h.get(region)
        if types is None:
            raise BadInputError(
                f"no prices for region {region!r}; the table has {', '.join(self.regions) or 'no regions'}",
                where=where,
                fix=f"run `{REFRESH_HINT} --region {region} --type {instance_type}` "
                "(needs AWS credentials allowed pricing:GetProducts)",
            )
        if instance_type not in types:
            raise BadInputError(
                f"no price for instance type {instance_type!r} in {region}; "
                f"known types there: {', '.join(sorted(types)) or 'none'}",
                where=where,
                fix=f"choose one of those, or run `{REFRESH_HINT} --region {region} --type {instance_type}`",
            )
        return float(types[instance_type])

    def gp3_price(self, region: str) -> float:
        """USD per GB-month of gp3 storage in `region`; BadInputError if the table lacks it."""
        if region not in self.ebs_gp3_usd_per_gb_month:
            raise BadInputError(
                f"no gp3 storage price for region {region!r}",
                where=f"price table ({self.origin}, taken on {self.taken_on})",
                fix=f"run `{REFRESH_HINT} --region {region}`",
            )
        return float(self.ebs_gp3_usd_per_gb_month[region])

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of prices.json (sorted, so that written tables diff cleanly)."""
        return {
            "taken_on": self.taken_on,
            "note": self.note,
            "currency": "USD",
            "instance_usd_per_hour": {
                region: {
                    t: self.instance_usd_per_h[region][t] for t in sorted(self.instance_usd_per_h[region])
                }
                for region in sorted(self.instance_usd_per_h)
            },
            "ebs_gp3_usd_per_gb_month": {
                region: self.ebs_gp3_usd_per_gb_month[region]
                for region in sorted(self.ebs_gp3_usd_per_gb_month)
            },
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> PriceTable:
        """A table from its JSON shape; BadInputError (where=origin) if it is not one."""

        def bad(what: str) -> BadInputError:
            return BadInputError(
                f"not a spike price table: {what}",
                where=origin,
                fix=f"delete the file to use the built-in table, or run `{REFRESH_HINT}`",
            )

        if not isinstance(data, dict):
            raise bad("expected a JSON object")
        if data.get("currency", "USD") != "USD":
            raise bad(f"currency must be USD, not {data.get('currency')!r}")
        for key in ("taken_on", "instance_usd_per_hour", "ebs_gp3_usd_per_gb_month"):
            if key not in data:
                raise bad(f"missing {key!r}")
        instances = data["instance_usd_per_hour"]
        if not isinstance(instances, dict):
            raise bad("'instance_usd_per_hour' must map region -> {instance type: USD per hour}")
        table: dict[str, dict[str, float]] = {}
        for region, types in instances.items():
            if not isinstance(types, dict):
                raise bad(f"'instance_usd_per_hour.{region}' must map instance type -> USD per hour")
            table[str(region)] = {
                str(t): _price(v, f"instance_usd_per_hour.{region}.{t}", bad) for t, v in types.items()
            }
        storage = data["ebs_gp3_usd_per_gb_month"]
        if not isinstance(storage, dict):
            raise bad("'ebs_gp3_usd_per_gb_month' must map region -> USD per GB-month")
        gp3 = {str(r): _price(v, f"ebs_gp3_usd_per_gb_month.{r}", bad) for r, v in storage.items()}
        return cls(str(data["taken_on"]), str(data.get("note", "")), table, gp3, origin)


def _price(value: Any, path: str, bad: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise bad(f"{path} must be a number >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class RegionCost:
    """One region's share of a run's cost."""

    region: str
    instances: int
    usd_per_instance_h: float
    instance_hours: float
    compute_usd: float
    storage_usd: float

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.storage_usd


@dataclass(frozen=True)
class CostEstimate:
    """What a run's injectors will cost: per region and in total, in USD."""

    instance_type: str
    billed_s_per_instance: int
    root_gb: int
    regions: tuple[RegionCost, ...]
    prices_taken_on: str

    @property
    def instances(self) -> int:
        return sum(r.instances for r in self.regions)

    @property
    def instance_hours(self) -> float:
        return sum(r.instance_hours for r in self.regions)

    @property
    def total_usd(self) -> float:
        return sum(r.total_usd for r in self.regions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "billed_s_per_instance": self.billed_s_per_instance,
            "root_gb": self.root_gb,
            "prices_taken_on": self.prices_taken_on,
            "instances": self.instances,
            "instance_hours": round(self.instance_hours, 6),
            "total_usd": round(self.total_usd, 6),
            "regions": [
                {
                    "region": r.region,
                    "instances": r.instances,
                    "usd_per_instance_h": r.usd_per_instance_h,
                    "instance_hours": round(r.instance_hours, 6),
                    "compute_usd": round(r.compute_usd, 6),
                    "storage_usd": round(r.storage_usd, 6),
                    "total_usd": round(r.total_usd, 6),
                }
                for r in self.regions
            ],
        }


def billed_seconds(lifetime_s: float) -> int:
    """Seconds EC2 bills for one Linux on-demand instance alive `lifetime_s`: whole seconds, 60 at least."""
    return max(MIN_BILLED_S, math.ceil(lifetime_s))


def estimate_cost(
    plan: Plan,
    instance_type: str,
    prices: PriceTable,
    *,
    boot_s: float,
    teardown_s: float,
    root_gb: int,
) -> CostEstimate:
    """The cost of running `plan`'s injectors as `instance_type`, per region and in total.

    Raises BadInputError before any AWS call when the table lacks the type or a region.
    """
    _require_non_negative(boot_s=boot_s, teardown_s=teardown_s, root_gb=root_gb)
    billed_s = billed_seconds(boot_s + plan.duration_s + teardown_s)
    regions = []
    for region in plan.regions:
        count = len(region.injectors)
        if count == 0:
            # A region without injectors costs nothing, whatever the table knows about it.
            regions.append(RegionCost(region.name, 0, 0.0, 0.0, 0.0, 0.0))
            continue
        usd_per_h = prices.instance_price(region.name, instance_type)
        gp3_usd = prices.gp3_price(region.name)
        instance_hours = count * billed_s / 3600
        regions.append(
            RegionCost(
                region=region.name,
                instances=count,
                usd_per_instance_h=usd_per_h,
                instance_hours=instance_hours,
                compute_usd=instance_hours * usd_per_h,
                storage_usd=root_gb * gp3_usd * instance_hours / HOURS_PER_MONTH,
            )
        )
    return CostEstimate(instance_type, billed_s, root_gb, tuple(regions), prices.taken_on)


def check_budget(estimate: CostEstimate, max_cost: float | None) -> None:
    """Refuse a run whose estimate exceeds `max_cost` USD (None: no budget)."""
    if max_cost is None:
        return
    if not math.isfinite(max_cost) or max_cost < 0:
        raise BadInputError(f"--max-cost must be a number of USD >= 0, not {max_cost}")
    if estimate.total_usd <= max_cost:
        return
    breakdown = ", ".join(
        f"{r.region} ${r.total_usd:.2f} ({r.instances} x {estimate.instance_type})" for r in estimate.regions
    )
    raise BadInputError(
        f"the run would cost about ${estimate.total_usd:.2f}, over the budget of ${max_cost:.2f} "
        f"({breakdown}; {estimate.billed_s_per_instance} s billed per instance)",
        fix=f"raise --max-cost to at least {_cents_up(estimate.total_usd):.2f}, or use fewer "
        "regions or injectors, a shorter profile or a smaller instance type",
    )


def ttl_margin_s(run_s: float) -> float:
    """The safety margin between a run's end and its injectors' TTL: 10% of the run, 5 min at least."""
    return max(MIN_TTL_MARGIN_S, TTL_MARGIN_FRACTION * run_s)


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


def check_operator_cidr(cidr: str) -> str:
    """The network allowed to reach the injectors, normalised ("203.0.113.7" -> "203.0.113.7/32").

    Refuses what is not a CIDR or an address, and anything wider than /8 (IPv4) or /32 (IPv6),
    which includes 0.0.0.0/0 and ::/0.
    """
    text = cidr.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadInputError(
            f"operator CIDR {cidr!r} is neither a CIDR nor an IP address",
            fix="give your public address (e.g. 203.0.113.7, which becomes 203.0.113.7/32) or a CIDR like 203.0.113.0/24",
        ) from None
    minimum = MIN_IPV4_PREFIX if network.version == 4 else MIN_IPV6_PREFIX
    if network.prefixlen < minimum:
        raise BadInputError(
            f"operator CIDR {network} would open the injectors to {network.num_addresses:,} addresses; "
            f"spike refuses anything wider than /{minimum} for IPv{network.version}",
            fix="give your own public address (it becomes a /32) or your office's CIDR",
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
