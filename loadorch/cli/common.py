"""Shared CLI plumbing: the consoles, error handling and common options."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from loadorch.errors import ExitCode, SpikeError

# soft_wrap: a long line (a path, a file:line:column error) is never broken in two,
# so output stays greppable when it goes to a file or a CI log.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = value


def handles_errors(func: F) -> F:
    """Turn spike's errors into a clear message and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpikeError as exc:
            if _state["debug"]:
                err_console.print(traceback.format_exc(), markup=False)
            err_console.print(f"[bold red]error:[/] {exc.render()}", soft_wrap=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile", "-p", help="A built-in profile name (see `spike profiles list`) or a YAML path."
    ),
]
RegionsOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated regions, e.g. eu-west-2,us-east-1; default: the profile's regions."),
]
TargetOption = Annotated[
    str | None,
    typer.Option(help="Base URL of the system under test; overrides the profile's target.base_url."),
]


def parse_regions(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())
