"""Commands as values, and the one place that runs them.

Builders (`mvn`, `java`, later `terraform`) return a `Command` that tests can
inspect without running it; `run_command` executes one and translates
failures into spike's errors.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loadorch.errors import InfrastructureError, PreflightError


@dataclass(frozen=True)
class Command:
    """argv plus working directory and extra environment; nothing runs until `run_command`."""

    argv: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def display(self) -> str:
        return shlex.join(self.argv)

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def run_command(command: Command, *, timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run to completion, capturing output. A missing program or a time-out is an error."""
    try:
        return subprocess.run(
            command.argv,
            cwd=command.cwd,
            env=command.full_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise PreflightError(
            f"{what}: program {command.argv[0]!r} not found", fix="run `spike doctor` to see what is missing"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise InfrastructureError(
            f"{what} did not finish within {timeout_s:.0f} s: {command.display()}"
        ) from exc
