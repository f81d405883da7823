"""What a provider does: give each injector somewhere to run, and take it all away again."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from loadorch.plan.model import InjectorPlan, Plan
from loadorch.process import Command


class InjectorHandle(Protocol):
    """One running injector."""

    injector_id: str

    def poll(self) -> int | None:
        """The exit status once the injector has ended, else None."""

    def stop(self, grace_s: float) -> None:
        """Ask it to stop, and force it after `grace_s`."""

    def results_dir(self) -> Path:
        """Where this injector's Gatling results are (local after `collect`)."""


class Provider(Protocol):
    """Creates the fleet, starts injectors, collects results and tears everything down."""

    name: str

    def provision(self, plan: Plan, run_dir: Path) -> None: ...

    def launch(
        self, injector: InjectorPlan, command: Command, workdir: Path, *, log_name: str = "console.log"
    ) -> InjectorHandle:
        """Start a process on the injector (Gatling, or its metrics agent), output to `workdir/log_name`."""

    def collect(self, handle: InjectorHandle) -> Path:
        """Bring the injector's results home; returns the local results directory."""

    def teardown(self) -> None:
        """Stop and remove everything this provider started; idempotent, never raises."""
