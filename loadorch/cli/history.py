"""`spike history` and `spike compare`: recorded runs, and whether one regressed against another."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import console, handles_errors
from loadorch.errors import ExitCode
from loadorch.history.compare import Comparison, MetricDelta, compare_runs
from loadorch.history.registry import RunRecord, get_run, list_runs

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="The run history file; default: <state dir>/history.sqlite."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_STATUS_STYLE = {"ok": "green", "improved": "cyan", "regressed": "bold red", "insufficient": "dim"}
_VERDICT_STYLE = {"passed": "green", "failed": "red", "degraded": "yellow", "interrupted": "yellow"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@handles_errors
def history(
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Only runs of this profile.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, most recent first.")] = 20,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List recorded runs, most recent first: verdict, p95, p99, error rate, throughput."""
    runs = list_runs(profile, limit, db=db)
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in runs]))
        return
    if not runs:
        scope = f" of profile {profile}" if profile else ""
        console.print(f"no recorded runs{scope}: `spike run` records each run when it finishes")
        return
    table = Table(
        "run id",
        "profile",
        "start (UTC)",
        "verdict",
        "p95 ms",
        "p99 ms",
        "errors",
        "req/s",
        title="Run history",
    )
    for r in runs:
        style = _VERDICT_STYLE.get(r.verdict, "")
        table.add_row(
            r.run_id,
            r.profile,
            _when(r.started_at_ms),
            f"[{style}]{r.verdict}[/]" if style else r.verdict,
            _ms(r.p95),
            _ms(r.p99),
            _rate(r.error_rate),
            _rps(r.throughput_rps),
        )
    console.print(table)


def _cell(m: MetricDelta, fmt: str) -> str:
    if m.baseline is None and m.candidate is None:
        return "-"
    show = {"rate": _rate, "rps": _rps}.get(fmt, _ms)
    text = f"{show(m.baseline)}→{show(m.candidate)}"
    if fmt == "ms" and m.delta_pct:
        text += f" ({m.delta_pct:+.0f}%)"
    style = _STATUS_STYLE[m.status]
    return f"[{style}]{text}[/]" if m.status != "ok" else text


def print_comparison(comparison: Comparison) -> None:
    """The per-request table and the verdict (also used by `spike run` after a regression check)."""
    table = Table(title=f"{comparison.candidate_run_id} against {comparison.baseline_run_id}")
    table.add_column("scope", overflow="fold")
    table.add_column("samples", no_wrap=True)
    for name in ("p50 ms", "p95 ms", "p99 ms", "error rate", "req/s"):
        table.add_column(name, no_wrap=True)
    table.add_column("status", no_wrap=True)
    for row in comparison.rows:
        table.add_row(
            row.scope,
            f"{row.baseline_count}/{row.candidate_count}",
            _cell(row.metric("p50"), "ms"),
            _cell(row.metric("p95"), "ms"),
            _cell(row.metric("p99"), "ms"),
            _cell(row.metric("error_rate"), "rate"),
            _cell(row.metric("throughput_rps"), "rps"),
            f"[{_STATUS_STYLE[row.status]}]{row.status}[/]",
        )
    console.print(table)
    for note in comparison.notes:
        console.print(f"[yellow]note:[/] {note}")
    t = comparison.tolerances
    console.print(
        f"tolerances: latency +max({t.latency_rel:.0%}, {t.latency_abs_ms:g} ms), "
        f"error rate +max({t.error_rate_abs:.2%} points, x{t.error_rate_factor:g}), "
        f"throughput -{t.throughput_drop_rel:.0%}, at least {t.min_samples} samples per scope",
        markup=False,
    )
    if comparison.verdict == "regressed":
        names = ", ".join(comparison.regressed_requests) or "all requests"
        console.print(f"[bold red]regressed[/]: {names}")
    else:
        console.print("[green]no regression[/]")


@handles_errors
def compare(
    run_a: Annotated[str, typer.Argument(help="The baseline run id (see `spike history`).")],
    run_b: Annotated[str, typer.Argument(help="The candidate run id, judged against the baseline.")],
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Compare run B with baseline run A per request; exit 1 when B regressed, 2 for an unknown run id."""
    baseline: RunRecord = get_run(run_a, db=db)
    candidate: RunRecord = get_run(run_b, db=db)
    comparison = compare_runs(baseline, candidate)
    if as_json:
        console.print_json(json.dumps(comparison.to_dict()))
    else:
        print_comparison(comparison)
    if comparison.verdict == "regressed":
        raise typer.Exit(int(ExitCode.SLO_FAILED))
