"""During the run: read what the injectors wrote, and build the terminal's live view."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadorch.analysis.simlog import LogAccumulator
from loadorch.engine.gatling import console
from loadorch.livestream import LiveStream
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.providers.base import InjectorHandle
from loadorch.run.result import InjectorOutcome
from loadorch.run.settings import ErrorLive, LiveView, RegionLive

TOP_ERRORS = 5


@dataclass
class InjectorRun:
    """An injector during and after the run."""

    plan: InjectorPlan
    handle: InjectorHandle
    accumulator: LogAccumulator
    log_path: Path | None = None
    offset: int = 0
    exit_code: int | None = None
    stopped_by_spike: bool = False
    # stopped only because it outlived its plan by the allowed overrun: its injection schedule ran
    # to the end, its users were waiting for answers (a hung or very slow target)
    overran: bool = False

    def read_new(self) -> None:
        """Feed the bytes Gatling appended to this injector's simulation.log since the last read."""
        if self.log_path is None:
            found = sorted(self.handle.results_dir().glob("*/simulation.log"))
            if not found:
                return
            self.log_path = found[0]
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return
        if chunk:
            self.offset += len(chunk)
            self.accumulator.feed(chunk)

    def outcome(self, console_path: Path, overrun_s: float) -> InjectorOutcome:
        """What the result says about this injector, once it has ended."""
        return InjectorOutcome(
            id=self.plan.id,
            region=self.plan.region,
            state=self.state,
            exit_code=self.exit_code,
            planned_users=self.plan.planned_users,
            log=str(self.log_path) if self.log_path else None,
            note=f"stopped {overrun_s:.0f} s after its plan ended, its users still waiting for answers"
            if self.overran
            else None,
            ready_margin_ms=console.ready_margin_ms(console_path),
            release_offset_ms=console.release_offset_ms(console_path, self.accumulator.origin_ms),
        )

    @property
    def state(self) -> str:
        if self.exit_code in (0, ASSERTIONS_FAILED) and not self.stopped_by_spike:
            return "completed"
        if self.overran:
            return "completed"
        if self.stopped_by_spike:
            return "stopped"
        return "failed"


ASSERTIONS_FAILED = 2  # Gatling's exit status when its own assertions fail


def top_errors(runs: Sequence[InjectorRun], limit: int = TOP_ERRORS) -> tuple[ErrorLive, ...]:
    """The most frequent error messages so far, from the logs parsed live."""
    counts: Counter[bytes] = Counter()
    for run in runs:
        counts.update(run.accumulator.errors)
    return tuple(
        ErrorLive(message.decode("utf-8", "replace"), count)
        for message, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    )


def live_view(plan: Plan, stream: LiveStream, runs: Sequence[InjectorRun], now_ms: int) -> LiveView:
    """What the terminal shows, from the agents' stream (the one InfluxDB receives)."""
    elapsed_s = max(0.0, (now_ms - plan.start_at_ms) / 1000)
    stream.poll()
    rows = []
    for region in plan.regions:
        # Gatling reports a second when it ends and the agent adds up to a second: the row shows
        # the newest settled second, planned and achieved for that same second
        second = stream.settled_second(region.name)
        now = stream.region_second(region.name, second) if second is not None else None
        planned_users = region.curve.users_between(second, second + 1) if second is not None else 0.0
        rows.append(
            RegionLive(
                name=region.name,
                planned_requests_per_s=planned_users * plan.requests_per_user,
                achieved_requests_per_s=now.requests if now else 0.0,
                requests=int(stream.requests[region.name]),
                ko=int(stream.ko[region.name]),
                p95_ms=None if now is None or now.p95_ms is None else int(now.p95_ms),
            )
        )
    running = sum(1 for r in runs if r.handle.poll() is None)
    return LiveView(elapsed_s, plan.duration_s, tuple(rows), running, len(runs), top_errors(runs))
