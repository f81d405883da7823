"""The local provider: each injector is a JVM on this machine; regions are labels.

Every JVM runs in its own process group and is told by the kernel to die if
spike dies (PR_SET_PDEATHSIG), so no Java process outlives a run, even when
spike itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from loadorch.errors import InjectorError, PreflightError
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.process import Command, spawn
from loadorch.providers.base import Artifacts, ClockCheck, InjectorHandle, InjectorSite, TeardownReport
from loadorch.run.layout import RunLayout


class LocalInjector:
    """A Gatling JVM started by the local provider."""

    def __init__(self, injector_id: str, process: subprocess.Popen[bytes], workdir: Path) -> None:
        self.injector_id = injector_id
        self.process = process
        self.workdir = workdir

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, grace_s: float) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def results_dir(self) -> Path:
        return self.workdir / "results"


class LocalProvider:
    """Injectors as local processes (the default; needs only Java)."""

    name = "local"
    extra_lead_s = 0.0
    # no: PR_SET_PDEATHSIG ties a child to the *thread* that started it, so the launches stay on
    # the orchestrator's thread (and each takes a millisecond anyway)
    parallel_launch = False
    checks_target_from_injectors = False  # the run's preflight checks it from this machine, the fleet

    def __init__(self) -> None:
        self.handles: list[LocalInjector] = []

    def preflight(self) -> None:
        """Nothing to check: this machine is the fleet (Java is checked by the run's own preflight)."""

    def check_plan(self, plan: Plan) -> tuple[str, ...]:
        return ()  # any plan runs here, within the planner's own bounds

    def check_target(self, base_url: str) -> str | None:
        return None  # checked by the preflight already, from this machine

    def recovery_details(self) -> dict[str, object]:
        return {}  # recovery finds the processes by the run directory

    def provision(self, plan: Plan, run_dir: Path) -> None:
        # Nothing to create: this machine is the fleet.
        return None

    def deploy(self, plan: Plan, artifacts: Artifacts, run_dir: Path) -> dict[str, InjectorSite]:
        # Nothing to copy: every injector uses the build cache and the feeders where they are.
        feeders = {name: str(path) for name, path in artifacts.feeders.items()}
        return {
            injector.id: InjectorSite(
                workdir=str(RunLayout(run_dir).injector(injector.id)),
                classpath=artifacts.classpath,
                feeders=feeders,
                java=artifacts.java,
                agent=(sys.executable, "-m", "loadorch", "agent"),
                agent_writes_sink=True,
            )
            for injector in plan.injectors
        }

    def clock_check(self) -> ClockCheck:
        # One clock: every injector reads this machine's.
        return ClockCheck()

    def put(self, injector: InjectorPlan, local: Path) -> None:
        return None  # the injector's working directory is its local folder

    def sync(self) -> None:
        return None  # every file is written here already

    def launch(
        self, injector: InjectorPlan, command: Command, workdir: Path, *, log_name: str = "console.log"
    ) -> LocalInjector:
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            # its own session: Ctrl-C reaches spike, which then stops the fleet in order; it dies with spike
            process = spawn(replace(command, cwd=command.cwd or workdir), output=workdir / log_name)
        except PreflightError as exc:
            raise InjectorError(
                f"cannot start the injector JVM: {exc.message}", where=injector.id, fix="run `spike doctor`"
            ) from exc
        handle = LocalInjector(injector.id, process, workdir)
        self.handles.append(handle)
        return handle

    def collect(self, handle: InjectorHandle) -> Path:
        # Results are written on this machine already.
        return handle.results_dir()

    def teardown(self, grace_s: float = 5.0) -> None:
        deadline = time.monotonic() + grace_s
        for handle in self.handles:
            if handle.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(handle.pid, signal.SIGTERM)
        for handle in self.handles:
            with contextlib.suppress(Exception):
                handle.stop(max(0.1, deadline - time.monotonic()))

    def teardown_report(self) -> TeardownReport:
        left = [h.injector_id for h in self.handles if h.poll() is None]
        if left:
            return TeardownReport(f"still running: {', '.join(left)}", clean=False)
        return TeardownReport("every injector stopped")
