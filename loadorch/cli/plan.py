"""`spike plan`: show what a run would do, change nothing."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import (
    AllowWideOperatorCidrOption,
    MaxInjectorsOption,
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
from loadorch.errors import BadInputError
from loadorch.plan.cost import SPOT_CEILING, CostEstimate, check_operator_cidr
from loadorch.plan.model import Plan
from loadorch.plan.planner import DEFAULT_MAX_INJECTORS, PlanOptions, chart, plan_run
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
    allow_wide_operator_cidr: AllowWideOperatorCidrOption = False,
    max_cost: MaxCostOption = None,
    max_injectors: MaxInjectorsOption = DEFAULT_MAX_INJECTORS,
    aws_endpoint: AwsEndpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the plan for a profile: regions, injectors, peak and total load, and the curve.

    With --provider aws also the instances per region, instance-hours, the estimated cost and the
    worst case if spike dies (every injector living to its TTL), refused (exit 2) when either is
    over --max-cost, or when the run does not fit the injectors' TTL. Nothing talks to AWS.
    """
    check_provider(provider)
    loaded = load_profile(profile)
    result = plan_run(
        loaded.profile,
        PlanOptions(
            now_ms=int(time.time() * 1000),
            provider=provider,
            regions=parse_regions(regions),
            target=target,
            max_injectors=max_injectors,
        ),
    )
    estimate = None
    if provider == "aws":
        # No address is looked up here: without --operator-cidr the plan is checked as from loopback.
        cidr = "127.0.0.1/32"
        if operator_cidr is not None:
            try:
                cidr = check_operator_cidr(operator_cidr, force_wide=allow_wide_operator_cidr)
            except BadInputError as exc:
                exc.where = "--operator-cidr"
                raise
        settings = aws_settings(
            instance_type,
            spot,
            ttl,
            cidr,
            max_cost,
            aws_endpoint,
            allow_wide_operator_cidr=allow_wide_operator_cidr,
        )
        estimate = aws_provider(settings).estimate_plan(result, cidr)
    if as_json:
        data = result.to_dict()
        if estimate is not None:
            data["cost"] = estimate.to_dict()
        console.print_json(json.dumps(data))
        return
    print_plan(result)
    if estimate is not None:
        print_cost(estimate)


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


def print_cost(estimate: CostEstimate) -> None:
    """The cost table (estimate and worst case per region) and what the figures rest on."""
    worst = estimate.worst_case_usd
    columns = ["region", "instances", "type", "USD/h each", "instance-hours", "estimated USD"]
    if worst is not None:
        columns.append("worst case USD")
    table = Table(*columns)
    for region in estimate.regions:
        rate = f"{region.usd_per_instance_h:.4f}"
        if estimate.use_spot and region.instances:
            rate += " (on-demand ceiling)" if region.market == SPOT_CEILING else " (spot)"
        row = [
            region.region,
            str(region.instances),
            estimate.instance_type,
            rate,
            f"{region.instance_hours:.2f}",
            _usd(region.total_usd),
        ]
        if worst is not None:
            row.append(_usd(region.worst_case_usd or 0.0))
        table.add_row(*row)
    total = ["[bold]total", str(estimate.instances), "", "", f"{estimate.instance_hours:.2f}"]
    total.append(_usd(estimate.total_usd))
    if worst is not None:
        total.append(_usd(worst))
    table.add_row(*total)
    console.print(table)
    summary = f"estimated {_dollars(estimate.total_usd)}"
    summary += "" if worst is None else f", worst case {_dollars(worst)} if spike dies"
    console.print(summary, markup=False)
    for line in estimate.basis():
        console.print(line, markup=False)


def _usd(amount: float) -> str:
    """Dollars to the cent; a cost under half a cent shows as <0.01, not as a free 0.00."""
    return "<0.01" if 0 < amount < 0.005 else f"{amount:.2f}"


def _dollars(amount: float) -> str:
    return "under $0.01" if 0 < amount < 0.005 else f"${amount:.2f}"
