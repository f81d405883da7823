"""Commands as values, and the one place that runs them.

Builders (`mvn`, `java`, later `terraform`) return a `Command` that tests can
inspect without running it; `run_command` executes one and translates
failures into spike's errors.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
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


_PR_SET_PDEATHSIG = 1


def on_parent_death_preexec(sig: signal.Signals) -> Callable[[], None]:
    """A preexec function: the kernel sends `sig` to the child when the thread that started it ends.

    SIGKILL for processes that hold nothing (a report JVM); SIGINT for Terraform, which then stops
    gently and saves its state, so a killed spike never leaves an apply running on its own.
    """

    def preexec() -> None:  # pragma: no cover - runs in the child
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig)
        except OSError:
            pass

    return preexec


die_with_parent = on_parent_death_preexec(signal.SIGKILL)


def spawn(
    command: Command,
    *,
    output: Path,
    append: bool = False,
    new_session: bool = True,
    on_parent_death: signal.Signals | None = signal.SIGKILL,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running process, its output to `output`: the one place spike starts one.

    `new_session`: its own process group, so a terminal's Ctrl-C reaches spike only and spike
    stops its children in order. `on_parent_death`: the signal the kernel sends it when the thread
    that started it ends (PR_SET_PDEATHSIG), so nothing outlives a killed spike: SIGKILL for what
    holds nothing, SIGINT for Terraform (it stops and saves its state), None for what must live on
    (a report finishing in the background, `spike stack up`'s InfluxDB). `env`: the whole
    environment (default: this process's plus the command's own).
    """
    with output.open("ab" if append else "wb") as handle:
        try:
            return subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                env=dict(env) if env is not None else command.full_env(),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
                preexec_fn=on_parent_death_preexec(on_parent_death) if on_parent_death is not None else None,
            )
        except OSError as exc:
            found = "not found" if isinstance(exc, FileNotFoundError) else f"cannot be started: {exc}"
            raise PreflightError(
                f"{what or 'program'} {command.argv[0]!r} {found}",
                fix="run `spike doctor` to see what is missing",
            ) from exc
