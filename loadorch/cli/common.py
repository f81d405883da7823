"""Shared CLI plumbing: the consoles, error handling and common options."""

from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from loadorch.errors import BadInputError, ExitCode, SpikeError
from loadorch.plan.planner import DEFAULT_MAX_INJECTORS, MAX_INJECTORS_LIMIT
from loadorch.profiles.model import REGION_NAME

# soft_wrap: a long line (a path, a file:line:column error) is never broken in two,
# so output stays greppable when it goes to a file or a CI log.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = value


def is_debug() -> bool:
    return _state["debug"]


def error_text(exc: SpikeError, prefix: str = "error:", style: str = "bold red") -> Text:
    """A coloured prefix and the error's message, printed literally: `[a-z]` or `[/]` in a message is text."""
    return Text.assemble((prefix, style), " ", exc.render())


def print_error(exc: SpikeError) -> None:
    if _state["debug"]:
        err_console.print(traceback.format_exc(), markup=False)
    err_console.print(error_text(exc), soft_wrap=True)


def exit_with(exc: SpikeError) -> NoReturn:
    """Print a spike error and exit with its code (for option callbacks, which run before the command)."""
    print_error(exc)
    raise typer.Exit(int(exc.exit_code))


def handles_errors(func: F) -> F:
    """Turn spike's errors into a clear message and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpikeError as exc:
            exit_with(exc)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


def _regions_callback(value: str | None) -> str | None:
    try:
        parse_regions(value)
    except SpikeError as exc:
        exit_with(exc)
    return value


def _target_callback(value: str | None) -> str | None:
    from loadorch.preflight import check_target_url

    if value is not None:
        try:
            check_target_url(value)
        except SpikeError as exc:
            exc.where = "--target"
            exit_with(exc)
    return value


ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="A built-in profile name (see `spike profiles list`), builtin:NAME, or a YAML path.",
    ),
]
RegionsOption = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated regions, e.g. eu-west-2,us-east-1; default: the profile's regions.",
        callback=_regions_callback,
    ),
]
TargetOption = Annotated[
    str | None,
    typer.Option(
        help="Base URL of the system under test; overrides the profile's target.base_url.",
        callback=_target_callback,
    ),
]


def _max_injectors_callback(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_INJECTORS_LIMIT:
        exit_with(
            BadInputError(
                f"{value} is outside 1..{MAX_INJECTORS_LIMIT}",
                where="--max-injectors",
                fix=f"give a whole number from 1 to {MAX_INJECTORS_LIMIT} (default {DEFAULT_MAX_INJECTORS}); "
                f"a plan needing more than {MAX_INJECTORS_LIMIT} needs a higher injector.max_rate_per_s "
                "in the profile or fewer regions",
            )
        )
    return value


MaxInjectorsOption = Annotated[
    int,
    typer.Option(
        "--max-injectors",
        help=f"Refuse a plan that needs more injectors than this (1 to {MAX_INJECTORS_LIMIT}; "
        "each injector is one EC2 instance with --provider aws).",
        callback=_max_injectors_callback,
    ),
]
AllowWideOperatorCidrOption = Annotated[
    bool,
    typer.Option(
        "--allow-wide-operator-cidr",
        help="aws: accept an --operator-cidr wider than /16 (IPv4) or /48 (IPv6), which opens the injectors' "
        "SSH to that whole range; wider than /8 or /32 is refused anyway.",
    ),
]

_REGION = re.compile(REGION_NAME)
_REGIONS_FIX = "give region names separated by commas, e.g. --regions eu-west-2,us-east-1"


def parse_regions(value: str | None) -> tuple[str, ...]:
    """`--regions a,b` as names; None (not given) is (): the profile's regions.

    Refused: an empty value, empty names (`a,,b`, a trailing comma), names that are not lowercase
    letters, digits and '-' (an AWS region such as eu-west-2, or an inventory's label), duplicates.
    """
    if value is None:
        return ()
    names = [part.strip() for part in value.split(",")]
    if not any(names):
        raise BadInputError(
            f"{value!r} names no region",
            where="--regions",
            fix=_REGIONS_FIX + ", or leave --regions out to use the profile's regions",
        )
    if not all(names):
        raise BadInputError(
            f"{value!r} has an empty region name (two commas in a row, or one at an end)",
            where="--regions",
            fix="remove the extra comma, e.g. --regions eu-west-2,us-east-1",
        )
    for name in names:
        if not _REGION.match(name):
            lower = name.lower()
            hint = f" (did you mean {lower}?)" if _REGION.match(lower) else ""
            raise BadInputError(
                f"{name!r} is not a region name{hint}",
                where="--regions",
                fix="region names are lowercase letters, digits and '-' (e.g. eu-west-2, or a label of the "
                "static inventory)",
            )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BadInputError(
                f"{value!r} names region {name!r} twice",
                where="--regions",
                fix="give each region once: --regions " + ",".join(dict.fromkeys(names)),
            )
        seen.add(name)
    return tuple(names)
