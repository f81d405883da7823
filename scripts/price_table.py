#!/usr/bin/env python3
"""Generate spike's built-in price table, loadorch/cloud/prices.json.

There is no network where spike is built, so the table is written from what is known about AWS's
public list prices (Linux, shared tenancy, on-demand; EBS gp3 storage) on AS_OF, not fetched:

- `US_EAST_1_LARGE`: the us-east-1 price of each family's `large` size. Within a family AWS
  prices sizes in proportion to their vCPUs (micro 1/8 of large, small 1/4, medium 1/2, xlarge
  x2, 2xlarge x4), so one figure per family gives every size.
- `ANCHORS`: a family's `large` price in a region where it is known; elsewhere the us-east-1
  price times `REGION_MULTIPLIER`, the region's typical premium over us-east-1 for compute
  (read off the published prices of t3 and c6i there).
- `GP3_USD_PER_GB_MONTH`: gp3 storage per region.
- `SPOT_FRACTION`: a typical spot price as a fraction of on-demand, per family (the spot
  market moves by zone and hour; this is an estimate, and the worst case never uses it).
- Offerings: a type is priced in a region only where EC2 offers it there, as recorded in moto's
  snapshot of DescribeInstanceTypeOfferings (a dev dependency). Regions absent from that
  snapshot get every family; spike's capacity preflight asks EC2 before any apply anyway.

Every figure is approximate and says so in the table (`"approximate": true`); `spike prices
--refresh` replaces on-demand figures with the AWS Pricing API's.

    .venv/bin/python scripts/price_table.py           # rewrite loadorch/cloud/prices.json
    .venv/bin/python scripts/price_table.py --check   # exit 1 if the file is not what this makes
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from loadorch.providers.terraform.config import AWS_REGIONS

AS_OF = "2025-06-01"
OUTPUT = Path(__file__).resolve().parents[1] / "loadorch" / "cloud" / "prices.json"

# Size -> price relative to `large` (AWS prices sizes in a family by their vCPUs).
SIZE_FACTOR = {"micro": 0.125, "small": 0.25, "medium": 0.5, "large": 1.0, "xlarge": 2.0, "2xlarge": 4.0}
BURSTABLE_SIZES = ("micro", "small", "medium", "large", "xlarge")
FIXED_SIZES = ("medium", "large", "xlarge", "2xlarge")

# us-east-1, USD per hour of family.large (Linux on-demand list prices).
US_EAST_1_LARGE = {
    "t3": 0.0832,
    "t3a": 0.0752,
    "t4g": 0.0672,
    "c6i": 0.085,
    "c6a": 0.0765,
    "c6g": 0.068,
    "c7i": 0.08925,
    "c7a": 0.10262,
    "c7g": 0.0725,
    "m6i": 0.096,
    "m6a": 0.0864,
    "m6g": 0.077,
    "m7i": 0.1008,
    "m7g": 0.0816,
}
BURSTABLE = {"t3", "t3a", "t4g"}

# A region's compute prices relative to us-east-1 (typical; families differ by a few percent).
REGION_MULTIPLIER = {
    "af-south-1": 1.33,
    "ap-east-1": 1.40,
    "ap-east-2": 1.30,
    "ap-northeast-1": 1.29,
    "ap-northeast-2": 1.20,
    "ap-northeast-3": 1.29,
    "ap-south-1": 1.05,
    "ap-south-2": 1.05,
    "ap-southeast-1": 1.22,
    "ap-southeast-2": 1.28,
    "ap-southeast-3": 1.22,
    "ap-southeast-4": 1.28,
    "ap-southeast-5": 1.12,
    "ap-southeast-7": 1.12,
    "ca-central-1": 1.11,
    "ca-west-1": 1.11,
    "eu-central-1": 1.15,
    "eu-central-2": 1.27,
    "eu-north-1": 1.05,
    "eu-south-1": 1.17,
    "eu-south-2": 1.11,
    "eu-west-1": 1.11,
    "eu-west-2": 1.16,
    "eu-west-3": 1.16,
    "il-central-1": 1.15,
    "me-central-1": 1.22,
    "me-south-1": 1.22,
    "mx-central-1": 1.20,
    "sa-east-1": 1.60,
    "us-east-1": 1.00,
    "us-east-2": 1.00,
    "us-west-1": 1.19,
    "us-west-2": 1.00,
}

# Known family.large prices per region (from the published price pages), over the multiplier.
ANCHORS: dict[str, dict[str, float]] = {
    "ap-east-1": {"t3": 0.1168},
    "ap-northeast-1": {"t3": 0.1088, "c6i": 0.107, "c7i": 0.11235, "m6i": 0.124},
    "ap-northeast-2": {"t3": 0.104},
    "ap-south-1": {"t3": 0.0896},
    "ap-southeast-1": {"t3": 0.1056, "c6i": 0.098, "c7i": 0.1029, "m6i": 0.12},
    "ap-southeast-2": {"t3": 0.1056},
    "ca-central-1": {"t3": 0.0928},
    "eu-central-1": {"t3": 0.096, "c6i": 0.097, "c7i": 0.10185, "m6i": 0.115},
    "eu-north-1": {"t3": 0.0864},
    "eu-west-1": {"t3": 0.0912, "c6i": 0.096, "c7i": 0.1008, "m6i": 0.107},
    "eu-west-2": {"t3": 0.0944, "c6i": 0.101, "c7i": 0.10605, "m6i": 0.111},
    "eu-west-3": {"t3": 0.0944},
    "sa-east-1": {"t3": 0.1344},
    "us-east-1": {},
    "us-east-2": {"t3": 0.0832, "c6i": 0.085, "c7i": 0.08925, "m6i": 0.096},
    "us-west-1": {"t3": 0.0992},
    "us-west-2": {"t3": 0.0832, "c6i": 0.085, "c7i": 0.08925, "m6i": 0.096},
}

# USD per GB-month of gp3 storage.
GP3_USD_PER_GB_MONTH = {
    "af-south-1": 0.1047,
    "ap-east-1": 0.1056,
    "ap-east-2": 0.1,
    "ap-northeast-1": 0.096,
    "ap-northeast-2": 0.0912,
    "ap-northeast-3": 0.096,
    "ap-south-1": 0.0912,
    "ap-south-2": 0.0912,
    "ap-southeast-1": 0.096,
    "ap-southeast-2": 0.096,
    "ap-southeast-3": 0.096,
    "ap-southeast-4": 0.096,
    "ap-southeast-5": 0.0912,
    "ap-southeast-7": 0.0912,
    "ca-central-1": 0.088,
    "ca-west-1": 0.088,
    "eu-central-1": 0.0952,
    "eu-central-2": 0.1047,
    "eu-north-1": 0.0836,
    "eu-south-1": 0.0924,
    "eu-south-2": 0.088,
    "eu-west-1": 0.088,
    "eu-west-2": 0.0928,
    "eu-west-3": 0.0928,
    "il-central-1": 0.0968,
    "me-central-1": 0.0968,
    "me-south-1": 0.0968,
    "mx-central-1": 0.088,
    "sa-east-1": 0.152,
    "us-east-1": 0.08,
    "us-east-2": 0.08,
    "us-west-1": 0.096,
    "us-west-2": 0.08,
}

# Typical spot price / on-demand price per family (newer families are discounted less).
SPOT_FRACTION = {
    "t3": 0.35,
    "t3a": 0.35,
    "t4g": 0.35,
    "c6i": 0.40,
    "c6a": 0.40,
    "c6g": 0.40,
    "c7i": 0.45,
    "c7a": 0.45,
    "c7g": 0.45,
    "m6i": 0.40,
    "m6a": 0.40,
    "m6g": 0.40,
    "m7i": 0.45,
    "m7g": 0.45,
}


def offerings_dir() -> Path:
    """moto's snapshot of DescribeInstanceTypeOfferings per region, found without importing moto.ec2
    (which loads all of moto's EC2 models)."""
    spec = importlib.util.find_spec("moto")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("moto is missing: run `make python-deps` (moto is a dev dependency)")
    return (
        Path(spec.submodule_search_locations[0]) / "ec2" / "resources" / "instance_type_offerings" / "region"
    )


@functools.cache
def offered_types(region: str) -> frozenset[str] | None:
    """The instance types EC2 offers in `region`, from moto's snapshot; None if it has no data."""
    entry = offerings_dir() / f"{region}.json.gz"
    if not entry.is_file():
        return None
    records = json.loads(gzip.decompress(entry.read_bytes()))
    return frozenset(str(r["InstanceType"]) for r in records)


def family_sizes(family: str) -> tuple[str, ...]:
    if family in BURSTABLE:
        return BURSTABLE_SIZES
    # medium exists only for some fixed-performance families; the offering data decides.
    return FIXED_SIZES


def large_price(region: str, family: str) -> float:
    anchored = ANCHORS.get(region, {}).get(family)
    if anchored is not None:
        return anchored
    return US_EAST_1_LARGE[family] * REGION_MULTIPLIER[region]


def build_table() -> tuple[dict[str, Any], list[str]]:
    """The table as written to prices.json, and the regions without offering data."""
    missing_regions = sorted(
        (set(AWS_REGIONS) - set(REGION_MULTIPLIER)) | (set(AWS_REGIONS) - set(GP3_USD_PER_GB_MONTH))
    )
    if missing_regions:
        raise SystemExit(f"no multiplier or gp3 price for {', '.join(missing_regions)}: add them")
    us_east_1 = offered_types("us-east-1")
    if us_east_1 is None:
        raise SystemExit("moto's offering data is missing: run `make python-deps` (moto is a dev dependency)")
    instances: dict[str, dict[str, float]] = {}
    unknown_offerings: list[str] = []
    for region in AWS_REGIONS:
        offered = offered_types(region)
        if offered is None:
            unknown_offerings.append(region)
        prices: dict[str, float] = {}
        for family in US_EAST_1_LARGE:
            for size in family_sizes(family):
                instance_type = f"{family}.{size}"
                if instance_type not in us_east_1:
                    continue  # the size does not exist in this family (c6i.medium, ...)
                if offered is not None and instance_type not in offered:
                    continue
                prices[instance_type] = round(large_price(region, family) * SIZE_FACTOR[size], 5)
        instances[region] = dict(sorted(prices.items()))
    source = (
        f"Approximate public AWS list prices as of {AS_OF}, written from AWS's published EC2 and EBS price "
        "pages (Linux, shared tenancy, on-demand; gp3 storage without extra IOPS or throughput), not "
        "fetched: us-east-1 per family, known regional prices where known, else us-east-1 times the "
        "region's typical premium; sizes scale with vCPUs as AWS prices them. A type is listed where "
        "EC2 offers it (moto's snapshot of DescribeInstanceTypeOfferings); "
        f"{', '.join(unknown_offerings) or 'no region'} had no offering data and list every family. "
        "Generated by scripts/price_table.py."
    )
    table = {
        "approximate": True,
        "as_of": AS_OF,
        "currency": "USD",
        "source": source,
        "note": (
            "Approximate list prices, not a quote: AWS changes prices and bills by the second. Run "
            "`spike prices --refresh` for current on-demand figures from the AWS Pricing API."
        ),
        "instance_usd_per_hour": instances,
        "ebs_gp3_usd_per_gb_month": {r: GP3_USD_PER_GB_MONTH[r] for r in sorted(AWS_REGIONS)},
        "spot_fraction_of_on_demand": dict(sorted(SPOT_FRACTION.items())),
        "spot_source": (
            f"Typical spot prices as a fraction of on-demand per family, as of {AS_OF} (AWS's Spot "
            "Instance Advisor savings); the spot market moves by zone and hour, so spot estimates are "
            "approximate and the worst case is priced at on-demand, the most a default spot request pays."
        ),
    }
    return table, unknown_offerings


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if prices.json differs from the output")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    table, unknown = build_table()
    text = render(table)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(
                f"{args.output} is not what scripts/price_table.py makes: run it to regenerate",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    types = sum(len(t) for t in table["instance_usd_per_hour"].values())
    print(f"wrote {args.output}: {len(table['instance_usd_per_hour'])} regions, {types} prices")
    if unknown:
        print(f"no offering data for {', '.join(unknown)}: every family listed there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
