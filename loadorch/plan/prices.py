"""The price table the cost preview reads: EC2 instance-hours, gp3 storage and typical spot prices. Pure.

Loaded, refreshed and written by `loadorch.cloud.pricing`; this module only holds the figures,
answers lookups (refusing clearly where a price is missing) and converts to and from JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadorch.errors import BadInputError

REFRESH_HINT = "spike prices --refresh"


def instance_family(instance_type: str) -> str:
    """`c6i` for `c6i.large`."""
    return instance_type.split(".", 1)[0]


@dataclass(frozen=True)
class PriceTable:
    """Prices in USD: Linux on-demand instance-hours per region and type, gp3 GB-months per region,
    and typical spot prices as a fraction of on-demand per family.

    `taken_on` is the date the figures are as of (YYYY-MM-DD), `source` and `note` say where they
    come from, `approximate` whether they are list prices written down rather than fetched, and
    `origin` where this table was loaded from (for messages).
    """

    taken_on: str
    note: str
    instance_usd_per_h: Mapping[str, Mapping[str, float]]
    ebs_gp3_usd_per_gb_month: Mapping[str, float]
    origin: str = "built in"
    source: str = ""
    approximate: bool = False
    spot_fraction: Mapping[str, float] = field(default_factory=dict)
    spot_source: str = ""

    @property
    def as_of(self) -> str:
        return self.taken_on

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(self.instance_usd_per_h))

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(sorted({t for types in self.instance_usd_per_h.values() for t in types}))

    def describe(self) -> str:
        """One line for the CLI: what kind of prices these are, as of when, from where."""
        kind = "approximate list prices" if self.approximate else "prices"
        return f"{kind} as of {self.taken_on} ({self.origin})"

    def instance_price(self, region: str, instance_type: str) -> float:
        """USD per hour of `instance_type` in `region`; BadInputError naming what is missing."""
        where = f"price table ({self.origin}, as of {self.taken_on})"
        types = self.instance_usd_per_h.get(region)
        if types is None:
            raise BadInputError(
                f"no prices for region {region!r}; the table has {', '.join(self.regions) or 'no regions'}",
                where=where,
                fix=f"run `{REFRESH_HINT} --region {region} --type {instance_type}` "
                "(needs AWS credentials allowed pricing:GetProducts)",
            )
        if instance_type not in types:
            family = instance_family(instance_type)
            same_family = sorted(t for t in types if instance_family(t) == family)
            known = ", ".join(same_family) if same_family else ", ".join(sorted(types)) or "none"
            raise BadInputError(
                f"no price for instance type {instance_type!r} in {region}; known types there: {known}",
                where=where,
                fix=f"choose one of those, or run `{REFRESH_HINT} --region {region} --type {instance_type}` "
                "(if EC2 does not offer the type there, the refresh says so)",
            )
        return float(types[instance_type])

    def spot_price(self, region: str, instance_type: str) -> float | None:
        """The typical spot USD per hour, or None when the table has no spot figure for the family."""
        fraction = self.spot_fraction.get(instance_family(instance_type))
        if fraction is None:
            return None
        return self.instance_price(region, instance_type) * fraction

    def gp3_price(self, region: str) -> float:
        """USD per GB-month of gp3 storage in `region`; BadInputError if the table lacks it."""
        if region not in self.ebs_gp3_usd_per_gb_month:
            raise BadInputError(
                f"no gp3 storage price for region {region!r}",
                where=f"price table ({self.origin}, as of {self.taken_on})",
                fix=f"run `{REFRESH_HINT} --region {region}`",
            )
        return float(self.ebs_gp3_usd_per_gb_month[region])

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of prices.json (sorted, so that written tables diff cleanly)."""
        return {
            "approximate": self.approximate,
            "as_of": self.taken_on,
            "currency": "USD",
            "source": self.source,
            "note": self.note,
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
            "spot_fraction_of_on_demand": {f: self.spot_fraction[f] for f in sorted(self.spot_fraction)},
            "spot_source": self.spot_source,
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> PriceTable:
        """A table from its JSON shape; BadInputError (where=origin) if it is not one.

        Tables written before `as_of` existed carry `taken_on`; both are read.
        """

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
        as_of = data.get("as_of", data.get("taken_on"))
        if as_of is None:
            raise bad("missing 'as_of'")
        for key in ("instance_usd_per_hour", "ebs_gp3_usd_per_gb_month"):
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
        spot = data.get("spot_fraction_of_on_demand", {})
        if not isinstance(spot, dict):
            raise bad("'spot_fraction_of_on_demand' must map instance family -> fraction of on-demand")
        fractions = {str(f): _price(v, f"spot_fraction_of_on_demand.{f}", bad) for f, v in spot.items()}
        for family, fraction in fractions.items():
            if not 0 < fraction <= 1:
                raise bad(f"spot_fraction_of_on_demand.{family} must be > 0 and <= 1, not {fraction}")
        approximate = data.get("approximate", False)
        if not isinstance(approximate, bool):
            raise bad(f"'approximate' must be true or false, not {approximate!r}")
        return cls(
            taken_on=str(as_of),
            note=str(data.get("note", "")),
            instance_usd_per_h=table,
            ebs_gp3_usd_per_gb_month=gp3,
            origin=origin,
            source=str(data.get("source", "")),
            approximate=approximate,
            spot_fraction=fractions,
            spot_source=str(data.get("spot_source", "")),
        )


def _price(value: Any, path: str, bad: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise bad(f"{path} must be a number >= 0, not {value!r}")
    return float(value)
