"""One run, start to finish, as a function: the run session (`loadorch.run.session`) does the work.

`execute_run` keeps the call that the CLI, the benchmarks and the tests use; its
`RunOutcome` carries the typed `RunResult` (and its summary.json form).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadorch.analysis.stats import MergedStats
from loadorch.errors import ExitCode
from loadorch.plan.model import Plan
from loadorch.profiles.loader import LoadedProfile
from loadorch.providers.base import Provider
from loadorch.run.result import RunResult
from loadorch.run.session import RunSession
from loadorch.run.settings import LiveView, NullObserver, RegionLive, RunObserver, RunSettings
from loadorch.run.signals import Interrupts

__all__ = [
    "LiveView",
    "NullObserver",
    "RegionLive",
    "RunObserver",
    "RunOutcome",
    "RunSettings",
    "execute_run",
]


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its plan, its directory and its typed result."""

    plan: Plan
    run_dir: Path
    result: RunResult

    @property
    def exit_code(self) -> ExitCode:
        return self.result.exit_code

    @property
    def summary(self) -> dict[str, Any]:
        """The result as summary.json holds it."""
        return self.result.to_dict()

    @property
    def stats(self) -> MergedStats | None:
        return self.result.stats

    @property
    def report_path(self) -> Path | None:
        return Path(self.result.report.path) if self.result.report.path else None


def execute_run(
    loaded: LoadedProfile,
    *,
    provider: Provider,
    settings: RunSettings,
    regions: tuple[str, ...] = (),
    target: str | None = None,
    observer: RunObserver | None = None,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    interrupts: Interrupts | None = None,
) -> RunOutcome:
    """Run a profile for real and return the judged outcome.

    spike's own errors are raised only before the run directory exists (preflight,
    planning); after that, every failure becomes the result's verdict.
    """
    session = RunSession(
        loaded,
        provider=provider,
        settings=settings,
        regions=regions,
        target=target,
        observer=observer,
        clock_ms=clock_ms,
        interrupts=interrupts,
    )
    result = session.execute()
    return RunOutcome(session.plan, session.run_layout.root, result)
