"""`spike plan`: show what a run would do, change nothing."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import (
    ProfileOption,
    ProviderOption,
    RegionsOption,
    TargetOption,
    check_provider,
    console,
    handles_errors,
    parse_regions,
)
from loadorch.plan.model import Plan
from loadorch.plan.planner import PlanOptions, chart, plan_run
from loadorch.profiles.loader import load_profile


@handles_errors
def plan(
    profile: ProfileOption,
    regions: RegionsOption = None,
    target: TargetOption = None,
    provider: ProviderOption = "local",
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the plan for a profile: regions, injectors, peak and total load, and the curve."""
    check_provider(provider)
    loaded = load_profile(profile)
    result = plan_run(
        loaded.profile,
        PlanOptions(
            now_ms=int(time.time() * 1000), provider=provider, regions=parse_regions(regions), target=target
        ),
    )
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    print_plan(result)


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
