"""The one error hierarchy of spike.

Every error says what is wrong, where (file:line:column for profiles, the host
or injector for remote failures) and how to fix it. Only the CLI turns these
into exit codes; library code raises and never exits.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `spike` command (documented in the README)."""

    PASSED = 0
    SLO_FAILED = 1
    BAD_INPUT = 2
    INFRASTRUCTURE = 3
    INTERRUPTED = 130


class SpikeError(Exception):
    """Root of every error spike raises on purpose."""

    exit_code: ExitCode = ExitCode.INFRASTRUCTURE

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class BadInputError(SpikeError):
    """The user gave something spike cannot use (profile, option, file)."""

    exit_code = ExitCode.BAD_INPUT


class ProfileError(BadInputError):
    """A profile file is invalid; `where` is file:line:column."""


class PreflightError(BadInputError):
    """A check before any injector starts failed (target, port, prerequisites)."""


class TargetRefusedError(PreflightError):
    """The target is neither on loopback nor on the profile's allow-list."""


class InfrastructureError(SpikeError):
    """Something spike depends on failed: a build, a process, a host."""

    exit_code = ExitCode.INFRASTRUCTURE


class BuildError(InfrastructureError):
    """Compiling the Gatling simulation failed."""


class InjectorError(InfrastructureError):
    """An injector failed to start or run; `where` names the injector."""


class RunInterrupted(SpikeError):
    """The run was stopped by Ctrl-C or SIGTERM; whatever existed was collected."""

    exit_code = ExitCode.INTERRUPTED
