"""`spike plan`: show what a run would do, change nothing."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import (
    ProfileOption,
    RegionsOption,
    TargetOption,
    console,
    handles_errors,
    parse_regions,
)
from loadorch.cli.fleet import (
    AwsEndpointOption,
    InstanceTypeOption,
    MaxCostOption,
    OperatorCidrOption,
    ProviderOption,
    SpotOption,
    TtlOption,
    aws_provider,
    aws_settings,
    check_provider,
)
from loadorch.plan.cost import CostEstimate
from loadorch.plan.model import Plan
from loadorch.plan.planner import PlanOptions, chart, plan_run
from loadorch.profiles.loader import load_profile


@handles_errors
def plan(
    profile: ProfileOption,
    regions: RegionsOption = None,
    target: TargetOption = None,
    provider: ProviderOption = "local",
    instance_type: InstanceTypeOption = "c6i.large",
    spot: SpotOption = False,
    ttl: TtlOption = 120,
    operator_cidr: OperatorCidrOption = None,
    max_cost: MaxCostOption = None,
    aws_endpoint: AwsEndpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the plan for a profile: regions, injectors, peak and total load, and the curve.

    With --provider aws also the instances per region, instance-hours and the estimated cost,
    refused (exit 2) over --max-cost or beyond the injectors' TTL. Nothing talks to AWS.
    """
    check_provider(provider)
    loaded = load_profile(profile)
    result = plan_run(
        loaded.profile,
        PlanOptions(
            now_ms=int(time.time() * 1000), provider=provider, regions=parse_regions(regions), target=target
        ),
    )
    estimate = None
    if provider == "aws":
        settings = aws_settings(
            instance_type, spot, ttl, operator_cidr or "127.0.0.1/32", max_cost, aws_endpoint
        )
        estimate = aws_provider(settings).check_plan(result, settings.operator_cidr or "127.0.0.1/32")
    if as_json:
        data = result.to_dict()
        if estimate is not None:
            data["cost"] = estimate.to_dict()
        console.print_json(json.dumps(data))
        return
    print_plan(result)
    if estimate is not None:
        print_cost(estimate, ttl)


def print_plan(result: Plan) -> None:
    console.print(
        f"[bold]{result.profile_name}[/]  run {result.run_id}  provider {result.provider}  target {result.base_url}"
    )
    table = Table("region", "share", "injectors", "peak users/s", "users", "requests")
    for region in result.regions:
        table.add_row(
            region.name,
            f"{region.share:.0%}",
            str(len(region.injectors)),
            f"{region.curve.peak_rate:,.1f}",
            f"{region.curve.total_users:,.0f}",
            f"{region.curve.total_users * result.requests_per_user:,.0f}",
        )
    table.add_row(
        "[bold]total",
        "100%",
        str(len(result.injectors)),
        f"{result.peak_rate:,.1f}",
        f"{result.planned_users:,.0f}",
        f"{result.planned_requests:,.0f}",
    )
    console.print(table)
    console.print(
        f"duration {result.duration_s:.0f} s, peak {result.peak_rate:,.1f} users/s, "
        f"{result.planned_requests:,.0f} requests ({result.requests_per_user} per user)"
    )
    for line in chart(result.curve):
        console.print(line, markup=False)


def print_cost(estimate: CostEstimate, ttl_minutes: int) -> None:
    table = Table("region", "instances", "type", "instance-hours", "USD/h each", "estimated USD")
    for region in estimate.regions:
        table.add_row(
            region.region,
            str(region.instances),
            estimate.instance_type,
            f"{region.instance_hours:.2f}",
            f"{region.usd_per_instance_h:.4f}",
            f"{region.total_usd:.2f}",
        )
    table.add_row(
        "[bold]total",
        str(estimate.instances),
        "",
        f"{estimate.instance_hours:.2f}",
        "",
        f"{estimate.total_usd:.2f}",
    )
    console.print(table)
    console.print(
        f"each injector is billed {estimate.billed_s_per_instance} s (boot, load, teardown) and powers itself off "
        f"{ttl_minutes} min after boot whatever happens; prices as of {estimate.prices_taken_on} "
        "(`spike prices --refresh` updates them)"
    )
