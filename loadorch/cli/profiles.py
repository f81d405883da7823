"""`spike profiles list|show|validate`."""

from __future__ import annotations

import traceback
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from loadorch.cli.common import console, err_console, error_text, handles_errors, is_debug
from loadorch.errors import ExitCode, InfrastructureError, SpikeError
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
def validate(
    files: Annotated[list[str], typer.Argument(help="Profile YAML files (or built-in names).")],
) -> None:
    """Validate profile files; every problem is reported with file:line:column.

    Every file is checked and reported, whatever happens to the others; exit 2 if any is invalid.
    """
    failed = 0
    for file in files:
        try:
            loaded = load_profile(file)
        except SpikeError as exc:
            failed += 1
            err_console.print(error_text(exc, "✗", "red"), soft_wrap=True)
        except Exception as exc:  # a bug must not hide the other files' results
            failed += 1
            if is_debug():
                err_console.print(traceback.format_exc(), markup=False)
            internal = InfrastructureError(
                f"internal error while validating: {type(exc).__name__}: {exc}",
                where=file,
                fix="please report it with the file; --debug shows the traceback",
            )
            err_console.print(error_text(internal, "✗", "red"), soft_wrap=True)
        else:
            console.print(Text.assemble(("✓", "green"), f" {file}: profile {loaded.profile.name!r} is valid"))
    if failed:
        raise typer.Exit(int(ExitCode.BAD_INPUT))
