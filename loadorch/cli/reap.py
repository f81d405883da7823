"""`spike reap`: find and remove spike's leftovers in any region; `spike prices`: the price table."""

from __future__ import annotations

import getpass
import re
from collections.abc import Sequence
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from loadorch.cli.common import console, handles_errors
from loadorch.cli.fleet import AwsExternalIdOption, AwsRegionProfileOption, AwsRoleArnOption, aws_account
from loadorch.cloud import pricing, reaper
from loadorch.cloud import tags as tag_keys
from loadorch.cloud.aws import AwsAccount, account_scope
from loadorch.cloud.leftovers import Resource
from loadorch.cloud.reaper import ReapOutcome, ReapStatus
from loadorch.errors import BadInputError, ExitCode
from loadorch.plan.cost import PriceTable

_DURATION = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}

AwsEndpointOption = Annotated[
    str | None,
    typer.Option(
        "--aws-endpoint",
        help="Send every AWS call here instead of AWS (a moto server or LocalStack), e.g. http://127.0.0.1:5000.",
    ),
]
RegionListOption = Annotated[
    list[str] | None,
    typer.Option("--region", help="A region; repeat the option or separate with commas."),
]


def parse_duration_s(text: str) -> float:
    """'90m', '2h', '1d', '1h30m', '45s' -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise typer.BadParameter(f"{text!r} is not a duration; use e.g. 45s, 90m, 2h, 1d or 1h30m")
    return float(sum(int(value) * _UNIT_S[unit] for unit, value in match.groupdict().items() if value))


def split_values(values: Sequence[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated option values as one list, in order, without duplicates."""
    parts = (part.strip() for value in values or () for part in value.split(","))
    return tuple(dict.fromkeys(part for part in parts if part))


@handles_errors
def reap(
    run: Annotated[
        str | None, typer.Option("--run", help="Only this run's resources (its SpikeRunId).")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only stale runs: a resource whose SpikeExpiresAt has passed, or created longer ago than "
            "this (45s, 90m, 2h, 1d, 1h30m), selects its whole run.",
        ),
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option(
            "--region", help="A region to sweep (repeat, or separate with commas); default: every region."
        ),
    ] = None,
    aws_endpoint: AwsEndpointOption = None,
    aws_role_arn: AwsRoleArnOption = None,
    aws_external_id: AwsExternalIdOption = None,
    aws_region_profile: AwsRegionProfileOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Terminate and delete what was found; without it, only list.")
    ] = False,
) -> None:
    """Find everything tagged ManagedBy=spike (in every region unless --region) and, with --yes, remove it.

    Dry run by default. With --yes, exits 0 when everything found is gone, 3 when something could not
    be removed.
    """
    older_than_s = parse_duration_s(older_than) if older_than is not None else None
    regions = split_values(region)
    account = aws_account(aws_role_arn, aws_external_id, aws_region_profile)
    who = "spike-reap-" + "".join(c if c.isalnum() or c in "=,.@-" else "-" for c in getpass.getuser())
    with account_scope(AwsAccount(account.role_arn, account.external_id, who[:64], account.region_profiles)):
        # every AWS call of the command acts in that account, and only the command's
        found = reaper.find_spike_resources(
            regions or None, aws_endpoint, run_id=run, older_than_s=older_than_s
        )
        scope = _scope(regions, run, older_than)
        if not found:
            console.print(f"[green]nothing to reap[/]: no spike resources {scope}")
            return
        console.print(f"found {len(found)} spike resource(s) {scope}:")
        console.print(_resource_table(found))
        if not yes:
            console.print("[yellow]dry run: nothing terminated[/]; add --yes to terminate and delete these")
            return
        with console.status(f"terminating and deleting {len(found)} resource(s); instances can take minutes"):
            result = reaper.reap(found, aws_endpoint)
        console.print(_outcome_table(result.outcomes))
        for outcome in result.failed:
            resource = outcome.resource
            console.print(
                f"[red]failed[/] {resource.region} {resource.kind} {resource.id}: {escape(outcome.detail)}"
            )
        if result.ok:
            console.print(f"[green]reaped[/]: {len(result.outcomes)} resource(s) gone")
            return
        console.print(
            f"[red]{len(result.failed)} of {len(result.outcomes)} resource(s) could not be removed[/]; "
            "run `spike reap` again, then check the AWS console"
        )
        raise typer.Exit(int(ExitCode.INFRASTRUCTURE))


def _scope(regions: Sequence[str], run: str | None, older_than: str | None) -> str:
    parts = [f"in {', '.join(regions)}" if regions else "in any region"]
    if run:
        parts.append(f"of run {run}")
    if older_than:
        parts.append(f"expired or older than {older_than}")
    return " ".join(parts)


_OUTCOME_STYLE = {ReapStatus.REMOVED: "green", ReapStatus.ALREADY_GONE: "green", ReapStatus.FAILED: "red"}


def _resource_table(resources: Sequence[Resource]) -> Table:
    table = _table("region", "kind", "id", "state", "run id", "owner", "expires")
    for resource in resources:
        table.add_row(
            resource.region,
            str(resource.kind),
            resource.id,
            escape(resource.state),
            escape(resource.run_id or "-"),
            escape(resource.owner or "-"),
            escape(resource.tags.get(tag_keys.EXPIRES_AT, "-")),
        )
    return table


def _outcome_table(outcomes: Sequence[ReapOutcome]) -> Table:
    table = _table("region", "kind", "id", "run id", "outcome")
    for outcome in outcomes:
        resource = outcome.resource
        table.add_row(
            resource.region,
            str(resource.kind),
            resource.id,
            escape(resource.run_id or "-"),
            f"[{_OUTCOME_STYLE[outcome.status]}]{outcome.status}[/]",
        )
    return table


def _table(*columns: str) -> Table:
    table = Table(*columns, box=box.SIMPLE, pad_edge=False)
    # Ids are what people copy: never wrapped. The rest may fold on a narrow terminal.
    for column in table.columns:
        column.no_wrap = column.header in {"region", "kind", "id", "outcome"}
        column.overflow = "fold"
    return table


@handles_errors
def prices(
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Fetch current prices from the AWS Pricing API (needs credentials)."),
    ] = False,
    region: RegionListOption = None,
    instance_type: Annotated[
        list[str] | None, typer.Option("--type", help="An instance type; repeat or separate with commas.")
    ] = None,
    aws_endpoint: AwsEndpointOption = None,
) -> None:
    """Show the on-demand prices the cost preview uses; --refresh updates them from AWS."""
    regions = split_values(region)
    types = split_values(instance_type)
    if refresh:
        table = pricing.refresh_prices(types, regions, aws_endpoint)
        console.print(f"[green]refreshed[/]: written to {escape(table.origin)}")
    else:
        table = pricing.load_prices()
    _check_known(table, regions, types)
    console.print(f"prices taken on {table.taken_on} ({table.origin})", markup=False)
    console.print(table.note, markup=False)
    console.print(_price_table(table, regions, types))


def _check_known(table: PriceTable, regions: Sequence[str], types: Sequence[str]) -> None:
    unknown_regions = [r for r in regions if r not in table.regions]
    unknown_types = [t for t in types if t not in table.instance_types]
    if not unknown_regions and not unknown_types:
        return
    missing = ", ".join([*(f"region {r}" for r in unknown_regions), *(f"type {t}" for t in unknown_types)])
    flags = " ".join([*(f"--region {r}" for r in unknown_regions), *(f"--type {t}" for t in unknown_types)])
    raise BadInputError(
        f"the price table has no {missing}; it has regions {', '.join(table.regions)} "
        f"and types {', '.join(table.instance_types)}",
        where=table.origin,
        fix=f"run `spike prices --refresh {flags}`",
    )


def _price_table(table: PriceTable, regions: Sequence[str], types: Sequence[str]) -> Table:
    shown = Table(
        "region", "instance type", "USD per hour", "gp3 USD per GB-month", box=box.SIMPLE, pad_edge=False
    )
    for name in regions or table.regions:
        region_prices = table.instance_usd_per_h.get(name, {})
        gp3 = table.ebs_gp3_usd_per_gb_month.get(name)
        for instance_type in types or sorted(region_prices):
            usd = region_prices.get(instance_type)
            shown.add_row(
                name,
                instance_type,
                "-" if usd is None else f"{usd:g}",
                "-" if gp3 is None else f"{gp3:g}",
            )
    return shown
