"""Validated, frozen profile models.

A *profile* says what normal traffic looks like (baseline rate), what the
storm looks like (shape), what users do (scenario), where they come from
(regions), how much one injector can inject (injector) and what "good"
means (slos). Loading and error reporting live in `loader.py`.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = r"^[a-z][a-z0-9_-]*$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(Model):
    """Where the load goes. Hosts outside loopback must be named in `allow_hosts`."""

    base_url: str = Field(description="http(s)://host[:port] of the system under test")
    allow_hosts: tuple[str, ...] = Field(
        default=(), description="host names that may be targeted although they are not on loopback"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", value):
            raise ValueError("must look like http://host:port or https://host (no spaces)")
        return value.rstrip("/")


class ViralShape(Model):
    """Baseline, then growth to `multiplier` x baseline, hold, decay back, cool down."""

    kind: Literal["viral"]
    warmup_s: int = Field(default=10, ge=0, description="seconds at baseline before the storm")
    growth: Literal["linear", "exponential", "logistic"] = "logistic"
    growth_s: int = Field(gt=0, description="seconds from baseline to peak")
    multiplier: float = Field(gt=1, le=1000, description="peak rate / baseline rate")
    hold_s: int = Field(default=0, ge=0, description="seconds at peak")
    decay_s: int = Field(default=0, ge=0, description="seconds from peak back to baseline")
    cooldown_s: int = Field(default=0, ge=0, description="seconds at baseline after the decay")


class Step(Model):
    duration_s: int = Field(gt=0)
    rate_per_s: float = Field(ge=0)
    ramp: bool = Field(default=False, description="ramp linearly from the previous rate instead of jumping")


class StepsShape(Model):
    """Explicit (duration, rate) points; each step holds its rate or ramps to it."""

    kind: Literal["steps"]
    steps: tuple[Step, ...] = Field(min_length=1)


class ReplayShape(Model):
    """A recorded spike's arrival curve (written by `spike replay import`).

    The breakpoints come from `curve_file` (CSV `t_s,rate_per_s`, relative to the profile) or
    are given inline as `points`; `scale` multiplies the rate, `speedup` compresses time (the
    same users in less time). `recorded_file` (CSV `second,count`) is the recording itself,
    against which a run's fidelity is reported.
    """

    kind: Literal["replay"]
    curve_file: str | None = Field(default=None, min_length=1)
    points: tuple[tuple[float, float], ...] = ()
    recorded_file: str | None = Field(default=None, min_length=1)
    scale: float = Field(default=1.0, gt=0, le=1000)
    speedup: float = Field(default=1.0, gt=0, le=1000)

    @model_validator(mode="after")
    def _one_source(self) -> ReplayShape:
        if (self.curve_file is None) == (not self.points):
            raise ValueError("give exactly one of curve_file or points")
        if self.points:
            check_curve_points(self.points)
        return self


def check_curve_points(points: tuple[tuple[float, float], ...]) -> None:
    """Breakpoints a replay may use: from t=0, times never decreasing, rates >= 0, 2 or more."""
    if len(points) < 2:
        raise ValueError("a replay curve needs at least two points")
    if points[0][0] != 0:
        raise ValueError(f"a replay curve starts at t=0, not t={points[0][0]:g}")
    for (t0, _), (t1, _) in pairwise(points):
        if t1 < t0:
            raise ValueError(f"replay curve times go backwards ({t0:g} then {t1:g})")
    if any(rate < 0 for _, rate in points):
        raise ValueError("replay curve rates must be >= 0")
    if points[-1][0] <= 0:
        raise ValueError("a replay curve must last longer than 0 s")


Shape = Annotated[ViralShape | StepsShape | ReplayShape, Field(discriminator="kind")]


class Request(Model):
    """One request users make; `path` may use {column} placeholders from feeders."""

    name: str = Field(pattern=NAME, description="stable name: a metric tag and report row")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: str = Field(pattern=r"^/", description="path below base_url, may hold {column} placeholders")
    weight: float = Field(default=1, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expect_status: tuple[int, ...] = (200,)

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in value if not 100 <= s <= 599]
        if bad or not value:
            raise ValueError(f"expected statuses must be HTTP codes 100-599, got {list(value)}")
        return value

    def placeholders(self) -> set[str]:
        text = self.path + (self.body or "") + "".join(self.headers.values())
        return set(PLACEHOLDER.findall(text))


class Feeder(Model):
    """A CSV file whose columns fill placeholders; one row per user."""

    name: str = Field(pattern=NAME)
    file: str = Field(description="CSV path, relative to the profile file")
    strategy: Literal["random", "circular"] = "random"


class ThinkTime(Model):
    min_ms: int = Field(default=0, ge=0)
    max_ms: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> ThinkTime:
        if self.max_ms < self.min_ms:
            raise ValueError(f"max_ms ({self.max_ms}) must be >= min_ms ({self.min_ms})")
        return self


class Scenario(Model):
    """What one arriving user does: `requests_per_user` requests drawn by weight."""

    name: str = Field(default="users", pattern=NAME)
    requests_per_user: int = Field(default=1, ge=1, le=100)
    think_time: ThinkTime = ThinkTime()
    requests: tuple[Request, ...] = Field(min_length=1)
    feeders: tuple[Feeder, ...] = ()

    @model_validator(mode="after")
    def _names(self) -> Scenario:
        names = [r.name for r in self.requests]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"request names must be unique, repeated: {', '.join(dupes)}")
        return self


class Region(Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    weight: float = Field(default=1, gt=0)


class Injector(Model):
    """What one injector can do; the planner sizes fleets from it."""

    max_rate_per_s: float = Field(default=1000, gt=0, description="max arrivals/s one injector injects")
    heap_mb: int = Field(default=512, ge=128, le=65536)


class LatencySlo(Model):
    percentile: Literal[50, 75, 95, 99] = Field(description="one of 50, 75, 95, 99")
    max_ms: int = Field(gt=0)
    request: str | None = Field(default=None, description="a request name; omitted means all requests")


class Slos(Model):
    error_rate_max: float | None = Field(default=None, ge=0, le=1, description="fraction of KO requests")
    latency: tuple[LatencySlo, ...] = ()


class Profile(Model):
    """A validated load-test profile."""

    name: str = Field(pattern=NAME)
    description: str = ""
    target: Target
    baseline_rate_per_s: float = Field(gt=0, description="normal arrivals per second")
    shape: Shape
    scenario: Scenario
    regions: tuple[Region, ...] = (Region(name="local"),)
    injector: Injector = Injector()
    slos: Slos = Slos()

    @model_validator(mode="after")
    def _cross_checks(self) -> Profile:
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"region names must be unique: {names}")
        requests = {r.name for r in self.scenario.requests}
        for slo in self.slos.latency:
            if slo.request is not None and slo.request not in requests:
                raise ValueError(
                    f"SLO names request {slo.request!r}, which the scenario does not have "
                    f"(valid: {', '.join(sorted(requests))})"
                )
        return self
