"""Validated, frozen profile models.

A *profile* says what normal traffic looks like (baseline rate), what the
storm looks like (shape), what users do (scenario), where they come from
(regions), how much one injector can inject (injector) and what "good"
means (slos). Loading and error reporting live in `loader.py`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from itertools import pairwise
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = r"^[a-z][a-z0-9_-]*$"
REGION_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"  # an AWS region (eu-west-2) or an inventory's label
MAX_DURATION_S = 7 * 24 * 3600  # longer than any storm rehearsal; keeps the curve arithmetic finite
MAX_RATE_PER_S = 10_000_000.0
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class FieldError(ValueError):
    """A cross-field problem that belongs to one field; `loc` is relative to the model raising it.

    The loader reads `loc` to point the error at that field's line instead of the model's.
    """

    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc = loc


class CurveError(ValueError):
    """A replay curve problem at breakpoint `index` (0-based)."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def check_base_url(value: str) -> str:
    """An http(s)://host[:port][/path] URL, checked without any DNS lookup; returned without a trailing '/'.

    Raises ValueError saying what is wrong: the scheme, the host (names, IPv4 and [IPv6] literals)
    or the port (1-65535).
    """
    if not value.strip():
        raise ValueError("is empty; give a URL like http://127.0.0.1:8080")
    if any(c.isspace() for c in value):
        raise ValueError(f"{value!r} contains white space; give a URL like http://127.0.0.1:8080")
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # a broken [IPv6] literal
        raise ValueError(f"{value!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"{parts.scheme}://" if parts.scheme and "://" in value else "no http:// or https://"
        raise ValueError(f"{value!r} has {scheme}; the target must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(f"{value!r} holds a user or password; credentials never go into a target URL")
    if "?" in value or "#" in value:
        raise ValueError(f"{value!r} has a query or fragment; give only scheme, host, port and path")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{value!r} has no host; give a URL like http://127.0.0.1:8080")
    try:
        check_host(host, bracketed="[" in parts.netloc)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port; a port is a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{value!r} has port 0; a port is a number from 1 to 65535")
    return value.rstrip("/")


def check_host(host: str, *, bracketed: bool = False) -> str:
    """A host name, an IPv4 address or (`bracketed`, or holding ':') an IPv6 address; no DNS lookup."""
    if bracketed or ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"[{host}] is not a valid IPv6 address") from None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host} is not a valid IPv4 address") from None
    elif len(host) > 253 or not all(
        _HOST_LABEL.match(label) for label in host.lower().removesuffix(".").split(".")
    ):
        raise ValueError(
            f"{host!r} is not a valid host name (letters, digits, '-' and '.'; IDN names as xn--)"
        )
    return host


class Model(BaseModel):
    # allow_inf_nan: `.inf` and `.nan` are valid YAML floats and would pass gt/le bounds
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Target(Model):
    """Where the load goes. Hosts outside loopback must be named in `allow_hosts`."""

    base_url: str = Field(description="http(s)://host[:port] of the system under test")
    allow_hosts: tuple[str, ...] = Field(
        default=(), description="host names that may be targeted although they are not on loopback"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_base_url(value)


class ViralShape(Model):
    """Baseline, then growth to `multiplier` x baseline, hold, decay back, cool down."""

    kind: Literal["viral"]
    warmup_s: int = Field(
        default=10, ge=0, le=MAX_DURATION_S, description="seconds at baseline before the storm"
    )
    growth: Literal["linear", "exponential", "logistic"] = "logistic"
    growth_s: int = Field(gt=0, le=MAX_DURATION_S, description="seconds from baseline to peak")
    multiplier: float = Field(gt=1, le=1000, description="peak rate / baseline rate")
    hold_s: int = Field(default=0, ge=0, le=MAX_DURATION_S, description="seconds at peak")
    decay_s: int = Field(default=0, ge=0, le=MAX_DURATION_S, description="seconds from peak back to baseline")
    cooldown_s: int = Field(
        default=0, ge=0, le=MAX_DURATION_S, description="seconds at baseline after the decay"
    )


class Step(Model):
    duration_s: int = Field(gt=0, le=MAX_DURATION_S)
    rate_per_s: float = Field(ge=0, le=MAX_RATE_PER_S)
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
        if self.curve_file is not None and self.points:
            raise FieldError("give exactly one of curve_file or points, not both", "points")
        if self.curve_file is None and not self.points:
            raise ValueError("give exactly one of curve_file or points")
        if self.points:
            try:
                check_curve_points(self.points)
            except CurveError as exc:
                raise FieldError(str(exc), "points", exc.index) from None
        return self


def check_curve_points(points: tuple[tuple[float, float], ...]) -> None:
    """Breakpoints a replay may use: from t=0, times never decreasing, rates >= 0, 2 or more.

    Raises CurveError naming the first offending point.
    """
    if len(points) < 2:
        raise CurveError("a replay curve needs at least two points", max(0, len(points) - 1))
    if points[0][0] != 0:
        raise CurveError(f"a replay curve starts at t=0, not t={points[0][0]:g}", 0)
    for index, ((t0, _), (t1, _)) in enumerate(pairwise(points), start=1):
        if t1 < t0:
            raise CurveError(f"replay curve times go backwards ({t0:g} then {t1:g})", index)
    for index, (t, rate) in enumerate(points):
        if not (0 <= rate <= MAX_RATE_PER_S) or rate != rate:
            raise CurveError(f"replay curve rates must be from 0 to {MAX_RATE_PER_S:g}, got {rate:g}", index)
        if not t <= MAX_DURATION_S:
            raise CurveError(f"replay curve times must be at most {MAX_DURATION_S} s, got {t:g}", index)
    if points[-1][0] <= 0:
        raise CurveError("a replay curve must last longer than 0 s", len(points) - 1)


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
    file: str = Field(min_length=1, description="CSV path, relative to the profile file")
    strategy: Literal["random", "circular"] = "random"


class ThinkTime(Model):
    min_ms: int = Field(default=0, ge=0)
    max_ms: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> ThinkTime:
        if self.max_ms < self.min_ms:
            raise FieldError(f"max_ms ({self.max_ms}) must be >= min_ms ({self.min_ms})", "max_ms")
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
        counts = Counter(names)
        dupes = sorted(n for n, count in counts.items() if count > 1)
        if dupes:
            second = [i for i, n in enumerate(names) if n == dupes[0]][1]
            raise FieldError(
                f"request names must be unique, repeated: {', '.join(dupes)}", "requests", second, "name"
            )
        return self


class Region(Model):
    name: str = Field(pattern=REGION_NAME)
    weight: float = Field(default=1, gt=0, le=1_000_000)


class Injector(Model):
    """What one injector can do; the planner sizes fleets from it."""

    max_rate_per_s: float = Field(
        default=1000, gt=0, le=MAX_RATE_PER_S, description="max arrivals/s one injector injects"
    )
    heap_mb: int = Field(default=512, ge=128, le=65536)


class LatencySlo(Model):
    percentile: Literal[50, 75, 95, 99] = Field(description="one of 50, 75, 95, 99")
    max_ms: int = Field(gt=0)
    request: str | None = Field(default=None, description="a request name; omitted means all requests")


class Slos(Model):
    error_rate_max: float | None = Field(default=None, ge=0, le=1, description="fraction of KO requests")
    latency: tuple[LatencySlo, ...] = ()


class StopCriterion(Model):
    """Stop the storm early when the target is already down: one condition held for `for_s` seconds.

    Exactly one of: `error_rate_above` (the fraction of KO responses of every second in the window),
    `latency_above_ms` (the `latency_percentile` of every second in the window), or `health_url`
    (a GET that fails, or answers 4xx/5xx, every second of the window).
    """

    error_rate_above: float | None = Field(default=None, gt=0, le=1, description="fraction of KO responses")
    latency_above_ms: int | None = Field(default=None, gt=0, le=3_600_000)
    latency_percentile: Literal[50, 75, 95, 99] = Field(default=95, description="one of 50, 75, 95, 99")
    health_url: str | None = Field(default=None, description="http(s) URL checked once a second")
    for_s: int = Field(
        default=5, ge=1, le=3600, description="how many consecutive seconds the condition holds"
    )

    @field_validator("health_url")
    @classmethod
    def _health(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)

    @model_validator(mode="after")
    def _one_kind(self) -> StopCriterion:
        given = [
            name
            for name in ("error_rate_above", "latency_above_ms", "health_url")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise FieldError(
                "give exactly one of error_rate_above, latency_above_ms or health_url"
                + (f" (got {', '.join(given)})" if given else ""),
                given[1] if len(given) > 1 else "for_s",
            )
        return self

    def describe(self) -> str:
        if self.error_rate_above is not None:
            return f"error rate above {self.error_rate_above:.0%} for {self.for_s} s"
        if self.latency_above_ms is not None:
            return f"p{self.latency_percentile} latency above {self.latency_above_ms} ms for {self.for_s} s"
        return f"health check {self.health_url} failing for {self.for_s} s"


class Profile(Model):
    """A validated load-test profile."""

    name: str = Field(pattern=NAME)
    description: str = ""
    target: Target
    baseline_rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S, description="normal arrivals per second")
    shape: Shape
    scenario: Scenario
    regions: tuple[Region, ...] = (Region(name="local"),)
    injector: Injector = Injector()
    slos: Slos = Slos()
    stop_when: tuple[StopCriterion, ...] = Field(
        default=(), description="stop the load early when the target is already down (the run ends aborted)"
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Profile:
        seen: set[str] = set()
        for index, name in enumerate(r.name for r in self.regions):
            if name in seen:
                raise FieldError(
                    f"region names must be unique: {name!r} is given twice", "regions", index, "name"
                )
            seen.add(name)
        requests = {r.name for r in self.scenario.requests}
        for index, slo in enumerate(self.slos.latency):
            if slo.request is not None and slo.request not in requests:
                raise FieldError(
                    f"SLO names request {slo.request!r}, which the scenario does not have "
                    f"(valid: {', '.join(sorted(requests))})",
                    "slos",
                    "latency",
                    index,
                    "request",
                )
        return self
