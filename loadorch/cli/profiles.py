"""`spike profiles list|show|validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import console, err_console, handles_errors
from loadorch.errors import ExitCode, ProfileError
from loadorch.plan.shapes import profile_curve
from loadorch.profiles.loader import builtin_names, load_profile, resolve_profile_path

app = typer.Typer(help="List, show and validate load profiles.", no_args_is_help=True)


@app.command("list")
@handles_errors
def list_profiles() -> None:
    """List the built-in profiles."""
    table = Table("name", "shape", "baseline/s", "peak/s", "duration", "description")
    for name in builtin_names():
        profile = load_profile(name).profile
        curve = profile_curve(profile)
        table.add_row(
            name,
            profile.shape.kind,
            f"{profile.baseline_rate_per_s:g}",
            f"{curve.peak_rate:g}",
            f"{curve.duration_s:.0f} s",
            profile.description,
        )
    console.print(table)


@app.command("show")
@handles_errors
def show(name: Annotated[str, typer.Argument(help="A built-in profile name or a YAML path.")]) -> None:
    """Print a profile's YAML."""
    path = resolve_profile_path(name)
    load_profile(path)  # only valid profiles are shown
    console.print(path.read_text(encoding="utf-8"), markup=False, end="")


@app.command("validate")
@handles_errors
def validate(files: Annotated[list[Path], typer.Argument(help="Profile YAML files.")]) -> None:
    """Validate profile files; every problem is reported with file:line:column."""
    failed = 0
    for file in files:
        try:
            loaded = load_profile(file)
        except ProfileError as exc:
            failed += 1
            err_console.print(f"[red]✗[/] {exc.render()}", soft_wrap=True)
        else:
            console.print(f"[green]✓[/] {file}: profile {loaded.profile.name!r} is valid")
    if failed:
        raise typer.Exit(int(ExitCode.BAD_INPUT))
