"""How to run, beyond the plan; and what a run reports while it goes (the observer and live view)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loadorch.dashboards.grafana import GrafanaKey
from loadorch.engine.gatling.command import JVM_OPTIONS_ENV, parse_jvm_options
from loadorch.plan.planner import DEFAULT_MAX_INJECTORS
from loadorch.profiles.model import StopCriterion


@dataclass(frozen=True)
class RunSettings:
    """How to run, beyond the plan."""

    runs_dir: Path
    cache_dir: Path
    java: str = "java"
    html_report: str = "wait"  # wait | background | off: Gatling's merged HTML report
    tick_s: float = 1.0
    start_lead_s: float = 1.0  # from the go signal (every injector ready) to the shared start instant
    ready_timeout_s: float = 180.0  # how long injectors may take to boot before the go is given anyway
    stop_grace_s: float = 10.0
    overrun_s: float = 60.0  # how long injectors may outlive the plan before they are stopped
    # keyword arguments of InfluxSettings.from_env (never secrets); None: no live metrics
    influx: Mapping[str, Any] | None = None
    grafana_url: str | None = None  # annotate the run's start and end there
    grafana_key: GrafanaKey | None = None
    max_clock_offset_ms: float = 250.0  # refuse injectors whose clock is further off than this
    compensate_clock: bool = True  # each injector waits for the shared instant on its own clock
    forward_drain_s: float = 30.0  # how long the last forwarded points may take to reach InfluxDB
    history_db: Path | None = None  # record the run in this registry (the CLI: spike's history.sqlite)
    baseline: str | None = None  # "last-passing" or a run id: a regression beyond tolerances fails the run
    schedule: str | None = None  # the schedule that started this run, recorded with it
    stop_when: tuple[StopCriterion, ...] = ()  # --abort-when, beside the profile's own stop_when
    max_injectors: int = DEFAULT_MAX_INJECTORS  # --max-injectors: the largest plan this run may make
    # extra options of every Gatling JVM, from $SPIKE_JVM_OPTIONS (tuning only: see parse_jvm_options)
    jvm_options: tuple[str, ...] = field(default_factory=lambda: jvm_options_from_env(os.environ))


def jvm_options_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    return parse_jvm_options(environ.get(JVM_OPTIONS_ENV, ""))


@dataclass(frozen=True)
class ErrorLive:
    message: str
    count: int


@dataclass(frozen=True)
class RegionLive:
    """One region's row: this second's planned and achieved requests, totals so far, the worst p95."""

    name: str
    planned_requests_per_s: float
    achieved_requests_per_s: float
    requests: int
    ko: int
    p95_ms: int | None


@dataclass(frozen=True)
class LiveView:
    """What the terminal shows once a second."""

    elapsed_s: float
    duration_s: float
    regions: tuple[RegionLive, ...]
    injectors_running: int
    injectors_total: int
    top_errors: tuple[ErrorLive, ...] = ()


class RunObserver(Protocol):
    """Receives progress; the CLI draws it, tests record it."""

    def phase(self, name: str, detail: str = "") -> None: ...

    def tick(self, view: LiveView) -> None: ...


class NullObserver:
    def phase(self, name: str, detail: str = "") -> None:
        return None

    def tick(self, view: LiveView) -> None:
        return None
