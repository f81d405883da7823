"""`spike doctor`: every prerequisite, its version, and how to fix what is missing."""

from __future__ import annotations

import typer
from rich.table import Table

from loadorch.cli.common import console, handles_errors
from loadorch.doctor import run_checks
from loadorch.errors import ExitCode


@handles_errors
def doctor() -> None:
    """Check prerequisites. Exits 0 when `spike run --provider local` can work, else 3."""
    table = Table("", "prerequisite", "version / state", "needed for", "fix")
    missing_required = False
    for check in run_checks():
        mark = "[green]✓[/]" if check.ok else ("[red]✗[/]" if check.required else "[yellow]-[/]")
        missing_required |= check.required and not check.ok
        table.add_row(mark, check.name, check.version, check.needed_for, "" if check.ok else check.fix)
    console.print(table)
    if missing_required:
        raise typer.Exit(int(ExitCode.INFRASTRUCTURE))
