"""`spike metrics pending|flush`: live-metric points that did not reach InfluxDB, and their delivery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from loadorch.cli.common import console, handles_errors
from loadorch.errors import BadInputError, ExitCode
from loadorch.metrics.pending import FlushReport, RunFlush, find_pending, flush_runs, runs_with_pending

app = typer.Typer(
    help="Live-metric points a run could not write to InfluxDB (it was away): list and deliver them.",
    no_args_is_help=True,
)

RunsDirOption = Annotated[Path, typer.Option(help="Where run directories are.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("pending")
@handles_errors
def pending(runs_dir: RunsDirOption = Path("runs"), as_json: JsonOption = False) -> None:
    """How many points each run still holds for InfluxDB (agent spools and unsent-points.lp)."""
    found = runs_with_pending(runs_dir)
    if as_json:
        total = sum(p.points for p in found)
        console.print_json(json.dumps({"points": total, "runs": [p.to_dict() for p in found]}))
        return
    if not found:
        console.print(f"nothing pending in {runs_dir}")
        return
    for run in found:
        where = ", ".join(f"{s.label} {s.points:,}" for s in run.sources)
        console.print(f"{run.run_id}: {run.points:,} points pending ({where})", markup=False)
    total = sum(p.points for p in found)
    console.print(
        f"total: {total:,} points in {len(found)} run(s); `spike metrics flush` delivers them", markup=False
    )


def print_flush(report: FlushReport) -> None:
    """One line per run, then the total (also used by `spike stack up`)."""
    for run in report.runs:
        console.print(_flush_line(run), markup=False)
    if len(report.runs) > 1:
        console.print(
            f"total: {report.pending_before:,} points pending, {report.delivered:,} delivered, "
            f"{report.pending_after:,} still pending",
            markup=False,
        )


def _flush_line(run: RunFlush) -> str:
    to = f" to {run.destination}" if run.destination else ""
    text = (
        f"{run.run_id}: {run.pending_before:,} points pending, {run.delivered:,} delivered{to}, "
        f"{run.pending_after:,} still pending"
    )
    return f"{text} ({run.error})" if run.error else text


@app.command("flush")
@handles_errors
def flush(
    run: Annotated[
        str | None, typer.Argument(help="A run id (default: every run with points pending).")
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    influx_url: Annotated[
        str | None,
        typer.Option(help="Deliver to this InfluxDB instead of the one recorded for the run."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver pending points to the InfluxDB each run wrote to (spools first, then unsent-points.lp).

    Exit 0 when nothing is left pending, 3 when something is (InfluxDB still away or refusing), 2 for
    an unknown run. Secrets come from the environment or the files the run's settings name.
    """
    if run is not None:
        run_dir = runs_dir / run
        if not run_dir.is_dir():
            raise BadInputError(
                f"no run {run!r} in {runs_dir}", fix="`spike metrics pending` lists runs with points pending"
            )
        candidates = [find_pending(run_dir.resolve())]
        candidates = [c for c in candidates if c.points > 0]
    else:
        candidates = runs_with_pending(runs_dir)
    override = {"url": influx_url} if influx_url else None
    report = flush_runs(candidates, influx_override=override)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    elif not report.runs:
        console.print(f"nothing pending {f'for run {run}' if run else f'in {runs_dir}'}", markup=False)
    else:
        print_flush(report)
    if not report.complete:
        raise typer.Exit(int(ExitCode.INFRASTRUCTURE))
