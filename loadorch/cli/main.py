"""The `spike` command."""

from __future__ import annotations

from typing import Annotated

import typer

from loadorch import __version__
from loadorch.cli import (
    agent,
    build,
    dashboards,
    doctor,
    history,
    lab,
    metrics,
    plan,
    profiles,
    reap,
    replay,
    run,
    runs,
    schedule,
    stack,
    target,
)
from loadorch.cli.common import set_debug

app = typer.Typer(
    name="spike",
    help="Orchestrate distributed viral-spike load tests with Gatling injectors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(profiles.app, name="profiles")
app.add_typer(target.app, name="target")
app.add_typer(stack.app, name="stack")
app.add_typer(dashboards.app, name="dashboards")
app.add_typer(schedule.app, name="schedule")
app.add_typer(replay.app, name="replay")
app.add_typer(metrics.app, name="metrics")
app.add_typer(runs.app, name="runs")
app.add_typer(lab.app, name="lab")
app.command("run")(run.run)
app.command("plan")(plan.plan)
app.command("build")(build.build)
app.command("doctor")(doctor.doctor)
app.command("agent")(agent.agent)
app.command("reap")(reap.reap)
app.command("prices")(reap.prices)
app.command("history")(history.history)
app.command("compare")(history.compare)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spike {__version__} (Gatling 3.11.5)")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    set_debug(debug)


def main() -> None:
    app()
