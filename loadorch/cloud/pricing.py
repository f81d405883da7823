"""EC2 prices for the cost preview: a shipped table, refreshable from the AWS Pricing API.

`load_prices()` reads `<state dir>/prices.json` when a refresh wrote one, else the table shipped
with spike (approximate list prices, dated; made by scripts/price_table.py). `refresh_prices()`
asks the Pricing API (`get_products`, served from us-east-1) for the given types in the given
regions, merges the answers over the current table and writes it to the state dir. It asks once
per instance type (the answer covers every region) and once for gp3 storage, not once per
region and type: the shipped table has about 50 types in 33 regions.

Spot figures are not in the Pricing API; a refresh keeps the table's typical spot fractions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from loadorch.atomic import write_atomic
from loadorch.cloud.aws import aws_client, aws_errors
from loadorch.errors import BadInputError
from loadorch.paths import state_dir
from loadorch.plan.cost import PriceTable

__all__ = [
    "PriceTable",
    "gp3_filters",
    "instance_filters",
    "load_prices",
    "load_shipped_prices",
    "parse_gp3_prices",
    "parse_instance_prices",
    "refresh_prices",
    "state_prices_path",
]

PRICES_FILE = "prices.json"
# The Pricing API answers only in a few regions; us-east-1 is the one every account can use.
PRICING_REGION = "us-east-1"
SERVICE_CODE = "AmazonEC2"


def state_prices_path() -> Path:
    """Where `refresh_prices` writes, and `load_prices` looks first."""
    return state_dir() / PRICES_FILE


def load_shipped_prices() -> PriceTable:
    """The table shipped inside the package."""
    text = resources.files("loadorch.cloud").joinpath(PRICES_FILE).read_text(encoding="utf-8")
    return PriceTable.from_dict(json.loads(text), origin="built in")


def load_prices() -> PriceTable:
    """The refreshed table in the state dir when there is one, else the shipped table."""
    path = state_prices_path()
    if not path.is_file():
        return load_shipped_prices()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(
            f"cannot read the refreshed price table: {exc}",
            where=str(path),
            fix="delete it to use the built-in table, or run `spike prices --refresh`",
        ) from exc
    return PriceTable.from_dict(data, origin=str(path))


def instance_filters(instance_type: str, region: str | None = None) -> list[dict[str, str]]:
    """get_products filters for one Linux, shared-tenancy, on-demand instance type (in every
    region, or in `region`)."""
    fields = {"instanceType": instance_type, **({"regionCode": region} if region else {})}
    return _term_match(
        **fields,
        operatingSystem="Linux",
        tenancy="Shared",
        preInstalledSw="NA",
        capacitystatus="Used",
    )


def gp3_filters(region: str | None = None) -> list[dict[str, str]]:
    """get_products filters for gp3 volume storage (in every region, or in `region`)."""
    return _term_match(
        productFamily="Storage", volumeApiName="gp3", **({"regionCode": region} if region else {})
    )


def _term_match(**fields: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": name, "Value": value} for name, value in fields.items()]


def parse_instance_prices(price_list: Iterable[str | Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """region -> instance type -> USD per hour, from get_products' PriceList items.

    Only Linux, shared tenancy, no pre-installed software, capacity status Used, on-demand hourly
    prices count (the filters should already ensure it; a loose filter must not slip a Windows or
    dedicated price in). Should AWS list several such prices for one type, the highest is kept,
    so that a budget check errs on the safe side.
    """
    found: dict[str, dict[str, float]] = {}
    for product, attributes in _products(price_list):
        if (
            attributes.get("operatingSystem") != "Linux"
            or attributes.get("tenancy") != "Shared"
            or attributes.get("preInstalledSw") != "NA"
            or attributes.get("capacitystatus", "Used") != "Used"
            or not attributes.get("instanceType")
            or not attributes.get("regionCode")
        ):
            continue
        for usd in _on_demand_usd(product, unit="Hrs"):
            types = found.setdefault(attributes["regionCode"], {})
            types[attributes["instanceType"]] = max(usd, types.get(attributes["instanceType"], 0.0))
    return found


def parse_gp3_prices(price_list: Iterable[str | Mapping[str, Any]]) -> dict[str, float]:
    """region -> USD per GB-month of gp3 storage, from get_products' PriceList items."""
    found: dict[str, float] = {}
    for product, attributes in _products(price_list):
        if attributes.get("volumeApiName") != "gp3" or not attributes.get("regionCode"):
            continue
        for usd in _on_demand_usd(product, unit="GB-Mo"):
            found[attributes["regionCode"]] = max(usd, found.get(attributes["regionCode"], 0.0))
    return found


def _products(
    price_list: Iterable[str | Mapping[str, Any]],
) -> Iterable[tuple[Mapping[str, Any], Mapping[str, str]]]:
    # boto3 hands each PriceList item over as a JSON string, not as a parsed object.
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        attributes = product.get("product", {}).get("attributes", {})
        yield product, attributes


def _on_demand_usd(product: Mapping[str, Any], unit: str) -> Iterable[float]:
    """Non-zero USD prices per `unit` in the product's OnDemand terms."""
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit") != unit:
                continue
            try:
                usd = float(dimension.get("pricePerUnit", {}).get("USD", "nan"))
            except ValueError:
                continue
            # A 0.00 dimension is a capacity-reservation or free-tier artefact, not the list price.
            if usd > 0:
                yield usd


def refresh_prices(
    types: Sequence[str] = (),
    regions: Sequence[str] = (),
    endpoint: str | None = None,
    *,
    today: date | None = None,
) -> PriceTable:
    """Ask the AWS Pricing API for `types` x `regions` (default: those in the current table), merge
    the answers over the current table, write it to the state dir and return it.

    BadInputError when the API has no price for a type or region (a typo, or a type EC2 does not
    offer there); nothing is written then.
    """
    base = load_prices()
    types = tuple(dict.fromkeys(types or base.instance_types))
    regions = tuple(dict.fromkeys(regions or base.regions))
    client = aws_client("pricing", PRICING_REGION, endpoint)
    instances: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    for instance_type in types:
        answer = parse_instance_prices(_get_products(client, instance_filters(instance_type, _one(regions))))
        for region in regions:
            price = answer.get(region, {}).get(instance_type)
            if price is None:
                missing.append(f"{instance_type} in {region}")
            else:
                instances.setdefault(region, {})[instance_type] = price
    storage = parse_gp3_prices(_get_products(client, gp3_filters(_one(regions))))
    gp3 = {region: storage[region] for region in regions if region in storage}
    missing.extend(f"gp3 storage in {region}" for region in regions if region not in storage)
    if missing:
        raise BadInputError(
            f"the AWS Pricing API has no Linux on-demand price for {', '.join(missing)}",
            where=f"pricing get_products ({PRICING_REGION})",
            fix="check the instance type and region names (e.g. c6i.large, eu-west-2), and that EC2 offers "
            "the type there; nothing was written",
        )
    day = (today or datetime.now(UTC).date()).isoformat()
    merged_instances = {region: dict(prices) for region, prices in base.instance_usd_per_h.items()}
    for region, prices in instances.items():
        merged_instances.setdefault(region, {}).update(prices)
    merged_gp3 = {**base.ebs_gp3_usd_per_gb_month, **gp3}
    # Still approximate while any figure in the merged table was not fetched just now.
    everything_fetched = all(
        set(prices) <= set(instances.get(region, {})) for region, prices in merged_instances.items()
    ) and set(merged_gp3) <= set(gp3)
    path = state_prices_path()
    table = PriceTable(
        taken_on=day,
        note=(
            f"On-demand Linux prices from the AWS Pricing API on {day} for {', '.join(types)} in "
            f"{', '.join(regions)}; other entries kept from the table as of {base.taken_on} ({base.origin})."
        ),
        instance_usd_per_h=merged_instances,
        ebs_gp3_usd_per_gb_month=merged_gp3,
        origin=str(path),
        source=f"AWS Pricing API get_products on {day}, merged over: {base.source or base.note}",
        approximate=base.approximate and not everything_fetched,
        spot_fraction=base.spot_fraction,
        spot_source=base.spot_source,
    )
    _write_atomically(path, json.dumps(table.to_dict(), indent=2, sort_keys=True) + "\n")
    return table


def _one(regions: Sequence[str]) -> str | None:
    """The region to filter on when only one is asked for; None (every region) otherwise."""
    return regions[0] if len(regions) == 1 else None


def _get_products(client: Any, filters: list[dict[str, str]]) -> list[str]:
    items: list[str] = []
    with aws_errors(f"pricing get_products ({PRICING_REGION})"):
        paginator = client.get_paginator("get_products")
        for page in paginator.paginate(ServiceCode=SERVICE_CODE, Filters=filters, FormatVersion="aws_v1"):
            items.extend(page.get("PriceList", []))
    return items


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
