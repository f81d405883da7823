"""Watching the load: the loop between the go and the last injector's exit, and what it saw.

`LoadWatch.watch()` syncs the injectors' files every tick, feeds the live view, and ends the load
early for three reasons only, each kept in the returned `WatchOutcome`:

- a stop criterion fired (`abort_criterion`; the run is judged `aborted` with that reason);
- a disk too full to keep results, or an injector whose Gatling cannot write them (`crashed`:
  results that cannot be written are results lost, so spike never injects blind);
- an injector outlived its plan by the overrun allowance (the run marks it `overran`).

`gate_findings` turns what was watched into the validity gates' findings (stalls, bursts, missing
heartbeats, saturation, region fidelity), read by the judge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadorch.diskspace import ConsoleWatch, DiskWatch
from loadorch.errors import SpikeError
from loadorch.livestream import LiveStream
from loadorch.plan.model import Plan
from loadorch.providers.base import Provider
from loadorch.run import gates
from loadorch.run.live import InjectorRun, live_view
from loadorch.run.result import GateFinding, RunResult
from loadorch.run.settings import RunObserver
from loadorch.run.stop import StopWatch

FORCED_GRACE_S = 1.0  # after a second Ctrl-C, or a full disk: how long injectors get before they are killed


@dataclass(frozen=True)
class WatchOutcome:
    abort_criterion: str | None = None  # the stop criterion that ended the load
    crashed: str | None = None  # why the load could not go on (a full disk, unwritable results)
    failure: str | None = None  # an injector that could not be stopped


def stop_injectors(runs: Sequence[InjectorRun], grace_s: float) -> str | None:
    """Stop `runs` (SIGTERM, then SIGKILL after `grace_s`); the first failure to stop one, if any."""
    failure: str | None = None
    for run in runs:
        run.stopped_by_spike = True
    for run in runs:
        try:
            run.handle.stop(grace_s)
        except SpikeError as exc:
            failure = failure or exc.render()
    return failure


class LoadWatch:
    """One watch of one run's load; see the module docstring."""

    def __init__(
        self,
        *,
        plan: Plan,
        provider: Provider,
        runs: list[InjectorRun],
        stream: LiveStream,
        observer: RunObserver,
        clock_ms: Callable[[], int],
        record: Callable[..., None],
        watched_dirs: Sequence[Path],
        min_free_bytes: int,
        consoles: dict[str, Path],
        stop_grace_s: float,
        overrun_s: float,
        tick_s: float,
    ) -> None:
        self.plan = plan
        self.provider = provider
        self.runs = runs
        self.stream = stream
        self.observer = observer
        self.clock_ms = clock_ms
        self.record = record
        self.disk_watch = DiskWatch(list(watched_dirs), min_free_bytes)
        self.console_watch = ConsoleWatch(consoles)
        self.stop_grace_s = stop_grace_s
        self.deadline_ms = plan.start_at_ms + (plan.duration_s + overrun_s) * 1000
        self.tick_s = tick_s
        # set before the injectors are stopped, so that an interrupt while stopping keeps them
        self.abort_criterion: str | None = None
        self.crashed: str | None = None

    def watch(self, stopwatch: StopWatch | None) -> WatchOutcome:
        """Until every injector has ended, a stop criterion fired, or the disk cannot take more."""
        plan = self.plan
        while True:
            self.provider.sync()
            for run in self.runs:
                run.read_new()
            running = [r for r in self.runs if r.handle.poll() is None]
            if stopwatch is not None:
                elapsed_s = (self.clock_ms() - plan.start_at_ms) / 1000
                fired = stopwatch.check((r.accumulator.second_latency for r in self.runs), elapsed_s)
                if fired is not None:
                    self.abort_criterion = fired
                    self.record("stop-criterion", criterion=fired)
                    self.observer.phase("abort", f"{fired}: stopping the load")
                    return WatchOutcome(
                        abort_criterion=fired, failure=stop_injectors(running, self.stop_grace_s)
                    )
            full = self.disk_trouble()
            if full is not None:
                self.crashed = full
                self.observer.phase("disk", f"{full}; stopping the load")
                return WatchOutcome(crashed=full, failure=stop_injectors(running, FORCED_GRACE_S))
            now = self.clock_ms()
            self.observer.tick(live_view(plan, self.stream, self.runs, now))
            if not running:
                return WatchOutcome()
            if now > self.deadline_ms:
                for run in running:
                    run.overran = True
                return WatchOutcome(failure=stop_injectors(running, self.stop_grace_s))
            _sleep_until_tick_or_all_exited(self.runs, self.tick_s)

    def disk_trouble(self) -> str | None:
        """A disk too full to keep results, or an injector whose Gatling could not write them."""
        full = self.disk_watch.check()
        if full is not None:
            return f"disk full: {full.message}"
        failed = self.console_watch.check()
        if failed:
            return "results could not be written: " + "; ".join(
                f"{k}: {v}" for k, v in sorted(failed.items())
            )
        return None


def gate_findings(
    plan: Plan,
    runs: Iterable[InjectorRun],
    result: RunResult,
    stream: LiveStream | None,
    observed_s: float,
    *,
    judge_regions: bool,
) -> list[GateFinding]:
    """The validity gates' findings over `observed_s` seconds of load.

    `judge_regions`: a region's fidelity is a gate only for a load that ran its whole plan (not
    interrupted, not aborted), and only in regions where every injector completed: a region with an
    injector that did not complete is short for that reason, already named.
    """
    runs = list(runs)
    if result.stats is None or not result.stats.requests:
        return []
    completed = {i.id for i in result.injectors if i.state == "completed"}
    arrivals = [
        gates.InjectorArrivals(r.plan.id, dict(r.accumulator.users_started), r.plan.id in completed)
        for r in runs
    ]
    findings = gates.injector_findings(plan, arrivals, observed_s)
    if stream is not None:
        stream.poll()  # the agents' last lines
        findings += gates.heartbeat_findings(plan, stream.beats, completed, observed_s)
        findings += gates.saturation_findings(stream.cpu_pct, observed_s)
    if result.fidelity is not None and judge_regions:
        whole = {r.name for r in plan.regions if all(i.id in completed for i in r.injectors)}
        by_region = {k: v for k, v in result.fidelity.by_region_mape_pct.items() if k in whole}
        findings += gates.region_findings(plan, by_region)
    return findings


def _sleep_until_tick_or_all_exited(runs: list[InjectorRun], tick_s: float) -> None:
    """Sleep one tick, but notice within 50 ms when the last injector exits."""
    end = time.monotonic() + tick_s
    while time.monotonic() < end:
        if all(r.handle.poll() is not None for r in runs):
            return
        time.sleep(0.05)
