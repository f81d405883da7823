"""`spike schedule add|list|remove|run-now|export`: scheduled resilience runs."""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import console, err_console, handles_errors
from loadorch.errors import BadInputError
from loadorch.schedule import cron, install, runner
from loadorch.schedule.install import EXPORT_FORMATS, Schedule

app = typer.Typer(
    help="Scheduled resilience runs: systemd timers or cron entries that run spike, with JUnit and webhooks.",
    no_args_is_help=True,
)

SpikeArgs = Annotated[
    list[str] | None,
    typer.Argument(help="The spike arguments after `--`, e.g. `-- run --profile weekly-resilience`."),
]


@app.command("add")
@handles_errors
def add(
    name: Annotated[str, typer.Argument(help="Schedule name: lower-case letters, digits and '-'.")],
    spike_args: SpikeArgs = None,
    cron_expr: Annotated[
        str,
        typer.Option(
            "--cron", help="Five-field cron expression or @daily/@weekly/@hourly, e.g. '0 3 * * MON'."
        ),
    ] = "@weekly",
    timezone: Annotated[
        str, typer.Option("--tz", help="Time zone of the cron expression (IANA name).")
    ] = "UTC",
    notify: Annotated[
        str | None,
        typer.Option(
            "--notify-webhook", "--notify", help="POST each run's verdict JSON to this webhook URL."
        ),
    ] = None,
    results_dir: Annotated[
        Path | None,
        typer.Option(help="Where runs, junit.xml and verdict.json go (default: in spike's state dir)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="systemd or cron (default: systemd when it runs this machine, else cron)."),
    ] = None,
    root: Annotated[
        Path,
        typer.Option(
            help="Install under this directory; only / touches the live system (systemctl, crontab)."
        ),
    ] = Path("/"),
    workdir: Annotated[
        Path | None, typer.Option(help="Working directory of the scheduled runs (default: the current one).")
    ] = None,
) -> None:
    """Add a schedule and install its systemd timer or cron entry."""
    schedule = Schedule(
        name=name,
        cron=cron_expr,
        spike_args=tuple(spike_args or ()),
        timezone=timezone,
        notify_url=notify,
        results_dir=str(results_dir.resolve()) if results_dir else None,
        workdir=str((workdir or Path.cwd()).resolve()),
        python=os.path.abspath(sys.executable),
        backend=install.choose_backend(backend),
        root=str(root.resolve()),
    )
    plan = install.add(schedule)
    console.print(
        f"[green]added[/] schedule {name} ({schedule.backend}): spike {shlex.join(schedule.spike_args)}"
    )
    for file in plan.files:
        console.print(f"  wrote {file}", markup=False)
    if plan.user_crontab:
        console.print("  installed in your crontab")
    for command in plan.commands:
        console.print(f"  ran   {command.display()}", markup=False)
    due = cron.next_after(schedule.cron, datetime.now(UTC), schedule.timezone)
    console.print(f"  next run {due.isoformat(timespec='minutes')}", markup=False)


@app.command("list")
@handles_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List schedules with their next due time and last verdict."""
    now = datetime.now(UTC)
    rows = []
    for schedule in install.list_schedules():
        try:
            state = json.loads(runner.state_path(schedule.name).read_text())
        except (OSError, ValueError):
            state = {}
        rows.append(
            {
                **schedule.to_dict(),
                "next_run": cron.next_after(schedule.cron, now, schedule.timezone).isoformat(
                    timespec="minutes"
                ),
                "last_started": state.get("last_started"),
                "last_verdict": state.get("last_verdict"),
                "missed_runs": len(state.get("missed_runs") or []),
            }
        )
    if as_json:
        for row in rows:
            row.pop("notify_url", None)  # may carry a token
        console.print_json(json.dumps(rows, sort_keys=True))
        return
    if not rows:
        console.print("no schedules; add one with `spike schedule add NAME --cron '0 3 * * MON' -- run ...`")
        return
    table = Table("name", "cron", "backend", "next run", "last run", "verdict", "missed", "command")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['cron']} {row['timezone']}",
            row["backend"],
            row["next_run"],
            row["last_started"] or "-",
            row["last_verdict"] or "-",
            str(row["missed_runs"]),
            "spike " + shlex.join(row["spike_args"]),
        )
    console.print(table)


@app.command("remove")
@handles_errors
def remove(name: Annotated[str, typer.Argument(help="The schedule to remove.")]) -> None:
    """Disable and delete a schedule's timer or cron entry; its results stay."""
    schedule = install.remove(name)
    console.print(
        f"[green]removed[/] schedule {name} ({schedule.backend}); results stay in {schedule.results_path()}"
    )


@app.command("run-now")
@handles_errors
def run_now(
    name: Annotated[str, typer.Argument(help="The schedule to run.")],
    spike_args: SpikeArgs = None,
    results_dir: Annotated[
        Path | None, typer.Option(help="Write runs, junit.xml and verdict.json here instead.")
    ] = None,
) -> None:
    """Run a schedule now, as its timer does: lock, spike, JUnit, verdict, webhook.

    Spike arguments after `--` replace the stored ones; with them NAME need not be
    stored (how an exported CI job runs). The exit code is spike's.
    """
    outcome = runner.run_now(name, spike_argv=spike_args or None, results_dir=results_dir)
    verdict = outcome.verdict
    colour = {"passed": "green", "failed": "red"}.get(verdict["verdict"], "yellow")
    err_console.print(
        f"schedule {name}: [{colour}]{verdict['verdict']}[/] (exit {outcome.exit_code}): {verdict['reason']}"
    )
    if verdict["missed"]:
        err_console.print(f"[yellow]missed runs[/]: {', '.join(verdict['missed'])}")
    webhook = verdict.get("webhook")
    if webhook and not webhook["delivered"]:
        err_console.print(
            f"[yellow]webhook not delivered[/] after {webhook['attempts']} attempts: {webhook['error']}"
        )
    err_console.print(f"  verdict {outcome.verdict_path}\n  junit   {outcome.junit_path}", markup=False)
    raise typer.Exit(outcome.exit_code)


@app.command("export")
@handles_errors
def export(
    name: Annotated[str, typer.Argument(help="The schedule to export.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"One of: {', '.join(EXPORT_FORMATS)}.")
    ] = "github-actions",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Print an equivalent CI job (GitHub Actions workflow or GitLab CI job)."""
    if format not in EXPORT_FORMATS:
        raise BadInputError(
            f"export format {format!r} is not valid", fix=f"valid: {', '.join(EXPORT_FORMATS)}"
        )
    text = install.export(name, format)
    if output is None:
        console.print(text, markup=False, end="")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    console.print(f"wrote {output}", markup=False)
