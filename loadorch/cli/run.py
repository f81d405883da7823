"""`spike run`: plan the storm, run it for real, judge it, tear everything down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loadorch.cli.common import (
    AllowWideOperatorCidrOption,
    MaxInjectorsOption,
    ProfileOption,
    RegionsOption,
    TargetOption,
    console,
    err_console,
    handles_errors,
    parse_regions,
)
from loadorch.cli.fleet import (
    AmiOption,
    AwsEndpointOption,
    AwsExternalIdOption,
    AwsRegionProfileOption,
    AwsRoleArnOption,
    HostKeyTimeoutOption,
    HostsOption,
    InstanceTypeOption,
    MaxCostOption,
    OperatorCidrOption,
    ProviderOption,
    PublicIpOption,
    SpotOption,
    SshUserOption,
    SubnetOption,
    TtlOption,
    VpcOption,
    aws_account,
    aws_provider,
    aws_settings,
    check_provider,
    local_provider,
    static_provider,
)
from loadorch.cli.live import TerminalObserver, render_summary
from loadorch.cli.runs import print_recovered
from loadorch.dashboards.grafana import load_key
from loadorch.history.registry import default_db_path
from loadorch.orchestrator import RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.plan.planner import DEFAULT_MAX_INJECTORS
from loadorch.profiles.loader import load_profile
from loadorch.providers.base import Provider
from loadorch.run.recover import recover_all
from loadorch.run.result import RunResult, Verdict
from loadorch.run.stop import parse_abort_when

HTML_REPORT_MODES = ("wait", "background", "off")


@handles_errors
def run(
    profile: ProfileOption,
    regions: RegionsOption = None,
    target: TargetOption = None,
    provider: ProviderOption = "local",
    hosts: HostsOption = None,
    instance_type: InstanceTypeOption = "c6i.large",
    spot: SpotOption = False,
    ttl: TtlOption = 120,
    operator_cidr: OperatorCidrOption = None,
    allow_wide_operator_cidr: AllowWideOperatorCidrOption = False,
    max_cost: MaxCostOption = None,
    max_injectors: MaxInjectorsOption = DEFAULT_MAX_INJECTORS,
    aws_endpoint: AwsEndpointOption = None,
    aws_role_arn: AwsRoleArnOption = None,
    aws_external_id: AwsExternalIdOption = None,
    aws_region_profile: AwsRegionProfileOption = None,
    subnet: SubnetOption = None,
    vpc: VpcOption = None,
    ami: AmiOption = None,
    ssh_user: SshUserOption = "ec2-user",
    public_ip: PublicIpOption = True,
    host_key_timeout: HostKeyTimeoutOption = 600.0,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are written.")] = Path("runs"),
    html_report: Annotated[
        str,
        typer.Option(
            help="Gatling's merged HTML report: wait (exit when it is written), background "
            "(exit after the verdict; the report finishes on its own), off."
        ),
    ] = "wait",
    start_lead_s: Annotated[
        float,
        typer.Option(
            min=0.2,
            max=600.0,
            help="Seconds between the go signal (every injector booted and waiting) and the shared start.",
        ),
    ] = 1.0,
    java: Annotated[str, typer.Option(help="The java executable injectors use.")] = "java",
    max_clock_offset_ms: Annotated[
        float,
        typer.Option(
            min=1.0, help="Refuse injectors whose clock is further off than this from this machine's."
        ),
    ] = 250.0,
    influx_url: Annotated[
        str | None,
        typer.Option(
            help="Stream live metrics to this InfluxDB (e.g. http://127.0.0.1:8086 from `spike stack up`)."
        ),
    ] = None,
    influx_api: Annotated[
        str,
        typer.Option(help="Write API: auto (from the server's /ping), v1 (/write) or v2 (/api/v2/write)."),
    ] = "auto",
    influx_db: Annotated[str, typer.Option(help="v1: the database.")] = "spike",
    influx_rp: Annotated[str | None, typer.Option(help="v1: the retention policy.")] = None,
    influx_user: Annotated[
        str | None,
        typer.Option(help="v1: the user; the password comes from $SPIKE_INFLUX_PASSWORD or a file."),
    ] = None,
    influx_password_file: Annotated[
        Path | None, typer.Option(help="v1: a file holding the password.")
    ] = None,
    influx_org: Annotated[str | None, typer.Option(help="v2: the organisation.")] = None,
    influx_bucket: Annotated[str, typer.Option(help="v2: the bucket.")] = "spike",
    influx_token_file: Annotated[
        Path | None, typer.Option(help="v2: a file holding the token (else $SPIKE_INFLUX_TOKEN).")
    ] = None,
    grafana_url: Annotated[
        str | None,
        typer.Option(help="Annotate the run's start and end in this Grafana (key: $SPIKE_GRAFANA_KEY)."),
    ] = None,
    grafana_key_file: Annotated[Path | None, typer.Option(help="A file holding the Grafana API key.")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Fail (exit 1) on a regression against this run: last-passing (of the same profile) or a run id."
        ),
    ] = None,
    history: Annotated[
        bool, typer.Option("--history/--no-history", help="Record the run in spike's run history.")
    ] = True,
    schedule: Annotated[
        str | None, typer.Option(hidden=True, help="The schedule that started this run.")
    ] = None,
    abort_when: Annotated[
        list[str] | None,
        typer.Option(
            "--abort-when",
            help="Stop the load early when the target is down, e.g. 'error-rate>50% for 5s', 'p95>2000ms for 10s', "
            "'health http://127.0.0.1:8080/health for 10s' (repeatable; beside the profile's stop_when).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the run result (summary.json's content) as JSON for scripts."),
    ] = False,
) -> None:
    """Run a load profile for real with Gatling injectors, then judge it against its SLOs.

    Exit codes: 0 passed, 1 SLO failed (or a stop criterion ended the storm), 2 bad input,
    3 degraded, invalid or aborted (or teardown incomplete), 130 interrupted.
    """
    check_provider(provider)
    if html_report not in HTML_REPORT_MODES:
        raise typer.BadParameter(
            f"unknown mode {html_report!r}; valid values: {', '.join(HTML_REPORT_MODES)}",
            param_hint="--html-report",
        )
    if influx_api not in ("auto", "v1", "v2"):
        raise typer.BadParameter(
            f"unknown API {influx_api!r}; valid values: auto, v1, v2", param_hint="--influx-api"
        )
    influx = None
    if influx_url:
        # everything but secrets: the sinks and agents read those from the environment or the files
        influx = {
            "url": influx_url,
            "api": influx_api,
            "database": influx_db,
            "retention_policy": influx_rp,
            "username": influx_user,
            "password_file": str(influx_password_file) if influx_password_file else None,
            "org": influx_org,
            "bucket": influx_bucket,
            "token_file": str(influx_token_file) if influx_token_file else None,
        }
    stop_when = tuple(parse_abort_when(text) for text in abort_when or ())
    # the key is read now, so a missing one stops the run before anything starts
    grafana_key = load_key(grafana_key_file) if grafana_url else None
    loaded = load_profile(profile)
    observer = TerminalObserver(err_console if as_json else console)
    chosen: Provider
    if provider == "aws":
        settings = aws_settings(
            instance_type,
            spot,
            ttl,
            operator_cidr,
            max_cost,
            aws_endpoint,
            host_key_timeout,
            account=aws_account(aws_role_arn, aws_external_id, aws_region_profile),
            allow_wide_operator_cidr=allow_wide_operator_cidr,
            subnet=subnet,
            vpc=vpc,
            ami=ami,
            ssh_user=ssh_user,
            public_ip=public_ip,
        )
        chosen = aws_provider(settings, progress=observer.region_progress)
    elif provider == "static":
        chosen = static_provider(hosts)
    else:
        chosen = local_provider()
    # runs whose spike died are finished first (stopped, collected, destroyed, recorded as aborted)
    print_recovered(recover_all(runs_dir))
    try:
        outcome = execute_run(
            loaded,
            provider=chosen,
            settings=RunSettings(
                runs_dir=runs_dir,
                cache_dir=build_cache_dir(),
                java=java,
                html_report=html_report,
                start_lead_s=start_lead_s,
                max_clock_offset_ms=max_clock_offset_ms,
                influx=influx,
                grafana_url=grafana_url,
                grafana_key=grafana_key,
                history_db=default_db_path() if history or baseline else None,
                baseline=baseline,
                schedule=schedule,
                stop_when=stop_when,
                max_injectors=max_injectors,
            ),
            regions=parse_regions(regions),
            target=target,
            observer=observer,
        )
    finally:
        observer.close()
    result = outcome.result
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print_result(result)
    raise typer.Exit(int(result.exit_code))


def print_result(result: RunResult) -> None:
    """The end of a run on the terminal: tables, the verdict and why, then where everything is."""
    console.print(render_summary(result))
    colour = {Verdict.PASSED: "green", Verdict.FAILED: "red"}.get(result.verdict, "yellow")
    console.print(f"[bold {colour}]verdict: {result.verdict.value.upper()}[/]  {escape(result.reason)}")
    fid, skew = result.fidelity, result.skew
    if fid is not None and skew is not None:
        console.print(
            f"fidelity (MAPE of arrivals vs plan): {fid.mape_pct} %   "
            f"requests achieved/planned: {fid.achieved_vs_planned_requests}   "
            f"first request after the shared start: {skew.first_request_offset_min}-"
            f"{skew.first_request_offset_max} ms"
        )
    if result.late_injectors:
        console.print(
            f"[yellow]late start:[/] {', '.join(result.late_injectors)} were not ready at the shared start"
        )
    metrics = result.metrics
    if metrics:
        pending = int(metrics.get("pending_points", 0) or 0)
        console.print(
            f"metrics: {metrics['points_written']:,} points written by the agents, {metrics['spooled']:,} spooled "
            f"during outages, {metrics['dropped']:,} dropped, {pending:,} pending delivery"
            + (" (`spike metrics flush` delivers them)" if pending else "")
            + "; "
            f"{metrics['orchestrator_points_written']:,} run points"
        )
    regression = result.regression
    if regression and "rows" in regression:
        state = (
            "[bold red]regressed[/]"
            if regression["regressed_requests"] or any(r["status"] == "regressed" for r in regression["rows"])
            else "[green]no regression[/]"
        )
        console.print(
            f"baseline {regression['baseline_run_id']}: {state}"
            + (
                f" ({', '.join(regression['regressed_requests'])})"
                if regression["regressed_requests"]
                else ""
            )
            + "; `spike compare` shows every row"
        )
    elif regression:
        console.print(f"baseline: {escape(str(regression.get('note') or regression.get('error')))}")
    clock = result.clock
    if clock:
        console.print(
            f"injector clocks: skew {clock['skew_ms']} ms across {len(clock['offsets_ms'])} injector(s)"
            + (", offsets compensated at the start" if clock.get("compensated") else "")
        )
    if result.teardown is not None and not result.teardown.clean:
        console.print(f"[bold red]teardown incomplete:[/] {escape(result.teardown.summary)}")
    console.print(f"run directory: {result.run_dir}")
    console.print(f"report: {result.report.path or 'not built'} ({result.report.state})")
