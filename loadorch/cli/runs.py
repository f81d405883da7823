"""`spike runs [list|recover]`: the runs in a runs directory, and finishing those whose spike died."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loadorch.cli.common import console, handles_errors
from loadorch.errors import BadInputError, ExitCode
from loadorch.run.journal import run_entries, run_entry
from loadorch.run.layout import RunLayout
from loadorch.run.recover import Recovered, recover, recover_all
from loadorch.run.result import RunResult

app = typer.Typer(
    help="List runs with their state; recover runs whose spike died.", invoke_without_command=True
)

RunsDirOption = Annotated[Path, typer.Option(help="The runs directory (as given to `spike run`).")]


def _verdict(layout: RunLayout) -> str:
    try:
        return str(json.loads(layout.summary.read_text()).get("verdict", "-"))
    except (OSError, ValueError):
        return "-"


@app.callback()
@handles_errors
def runs(ctx: typer.Context, runs_dir: RunsDirOption = Path("runs")) -> None:
    """List the runs, newest first: running, finished, or unfinished (its spike died: `spike runs recover`)."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table("run", "state", "last phase", "verdict", "started")
    unfinished = 0
    for entry in run_entries(runs_dir):
        unfinished += entry.state == "unfinished"
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.started_ms / 1000))
            if entry.started_ms
            else "-"
        )
        colour = {"unfinished": "red", "running": "cyan"}.get(entry.state, "green")
        table.add_row(
            escape(entry.layout.run_id),
            f"[{colour}]{entry.state}[/]",
            entry.last_phase or "-",
            _verdict(entry.layout),
            started,
        )
    console.print(table)
    if unfinished:
        console.print(
            f"{unfinished} unfinished run(s): `spike runs recover` stops, collects, destroys and records them"
        )


def print_recovered(done: list[Recovered]) -> None:
    for item in done:
        result: RunResult = item.result
        console.print(
            f"recovered run {escape(result.run_id)}: verdict {result.verdict.value} (exit {int(result.exit_code)}); "
            f"{escape(result.reason)}; {item.stopped_processes} leftover process(es) stopped; "
            f"teardown: {escape(result.teardown.summary if result.teardown else '-')}"
        )


@app.command("recover")
@handles_errors
def recover_command(
    run: Annotated[str | None, typer.Argument(help="A run id (default: every unfinished run).")] = None,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """Finish runs whose spike died: stop what is left, collect, destroy the fleet, judge (aborted), record."""
    if run is None:
        done = recover_all(runs_dir)
        if not done:
            console.print("no unfinished run")
        print_recovered(done)
        raise typer.Exit(
            int(ExitCode.INFRASTRUCTURE)
            if any(not d.result.teardown or not d.result.teardown.clean for d in done)
            else 0
        )
    layout = RunLayout((runs_dir / run).resolve())
    if not layout.root.is_dir():
        raise BadInputError(f"no run {run!r} in {runs_dir}", fix="`spike runs` lists the runs")
    if run_entry(layout).state != "unfinished":
        raise BadInputError(
            f"run {run} is {run_entry(layout).state}, not unfinished", fix="`spike runs` lists the runs"
        )
    item = recover(layout)
    print_recovered([item])
    clean = item.result.teardown is None or item.result.teardown.clean
    raise typer.Exit(0 if clean else int(ExitCode.INFRASTRUCTURE))
