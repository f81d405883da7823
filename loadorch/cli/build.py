"""`spike build`: compile a profile's simulation into the build cache now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadorch.cli.common import console, handles_errors
from loadorch.engine.gatling.build import compile_simulation
from loadorch.engine.gatling.render import render_simulation
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile


@handles_errors
def build(
    profile: Annotated[
        list[str], typer.Option("--profile", "-p", help="Profile name or path; repeat for several.")
    ],
    print_source: Annotated[bool, typer.Option("--print", help="Print the rendered Scala source.")] = False,
) -> None:
    """Render and compile the Gatling simulation of each profile (downloads Gatling once)."""
    for name in profile:
        source = render_simulation(load_profile(name).profile)
        if print_source:
            console.print(source, markup=False)
        compiled = compile_simulation(source, build_cache_dir())
        console.print(f"{name}: compiled simulation {compiled.key} in {Path(compiled.directory)}")
