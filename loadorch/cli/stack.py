"""`spike stack up|down|status`: the local InfluxDB that receives live metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loadorch.cli.common import console, handles_errors
from loadorch.metrics.pending import FlushReport, flush_all
from loadorch.metrics.stack import (
    DEFAULT_PORT,
    DEFAULT_RPC_PORT,
    StackStatus,
    stack_down,
    stack_status,
    stack_up,
)

app = typer.Typer(
    help="The local metrics stack: Debian's InfluxDB 1.6.7 on 127.0.0.1, run by spike.",
    no_args_is_help=True,
)


def _show(status: StackStatus) -> None:
    colour = "green" if status.running else "yellow"
    console.print(f"[{colour}]influxdb[/]: {status.note}")
    for label, value in status.lines():
        console.print(f"  {label:<8} {value}", markup=False)


@app.command("up")
@handles_errors
def up(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port on 127.0.0.1.")] = DEFAULT_PORT,
    rpc_port: Annotated[
        int, typer.Option(min=1, max=65535, help="InfluxDB's backup/restore RPC port on 127.0.0.1.")
    ] = DEFAULT_RPC_PORT,
    runs_dir: Annotated[
        Path, typer.Option(help="Deliver the points runs here could not write to this InfluxDB.")
    ] = Path("runs"),
) -> None:
    """Start InfluxDB in the background (if it is not running) and create the `spike` database.

    Then points that earlier runs could not write to it (it was down) are delivered.
    """
    status = stack_up(port=port, rpc_port=rpc_port)
    _show(status)
    if status.running and status.url:
        _show_flush(flush_all(runs_dir, only_server=status.url), runs_dir)


def _show_flush(report: FlushReport, runs_dir: Path) -> None:
    mine = [r for r in report.runs if not r.skipped]
    others = [r for r in report.runs if r.skipped]
    if not mine:
        console.print(f"pending metrics: none in {runs_dir} for this InfluxDB", markup=False)
    for run in mine:
        colour = "green" if run.pending_after == 0 else "yellow"
        text = (
            f"run {run.run_id}: {run.pending_before:,} points pending, {run.delivered:,} delivered, "
            f"{run.pending_after:,} left" + (f" ({run.error})" if run.error else "")
        )
        console.print(f"[{colour}]pending metrics[/]: {escape(text)}")
    if others:
        points = sum(r.pending_after for r in others)
        console.print(
            f"{points:,} points of {len(others)} run(s) wait for other InfluxDB servers: `spike metrics flush`",
            markup=False,
        )


@app.command("down")
@handles_errors
def down() -> None:
    """Stop the stack's InfluxDB; its data stays for the next `up`."""
    _show(stack_down())


@app.command("status")
@handles_errors
def status() -> None:
    """Say whether the stack's InfluxDB runs, where, and which version."""
    _show(stack_status())
