"""Exact latency statistics from integer-millisecond histograms, and the merged result of a run.

Domain terms:

*histogram*
    A mapping ``response time in ms -> number of requests`` (a ``Counter``).
    Gatling logs whole milliseconds, so a histogram holds every sample
    exactly while staying small (one entry per distinct millisecond value),
    and histograms of several injectors merge exactly by adding counts.

*nearest-rank percentile*
    The q-th percentile of N samples is the smallest value ``v`` such that at
    least ``ceil(q/100 * N)`` samples are ``<= v`` (at least one sample, so
    q=0 gives the minimum; q=100 gives the maximum). It is always one of the
    samples. Gatling's reports use a t-digest instead (approximate, and
    randomized), so spike's percentiles can differ from Gatling's by the
    t-digest error, while counts, min, max, mean and standard deviation agree
    exactly.

*mean* and *standard deviation*
    As Gatling 3.11.5 reports them: ``mean = round(sum / count)`` and
    ``stdDev = round(sqrt(sumOfSquares / count - (sum / count)^2))``, with
    round-half-up (Java's ``Math.round``), the unrounded mean inside the root
    and the same double-precision arithmetic, so the numbers match.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal

from loadorch.errors import BadInputError

Histogram = Mapping[int, int]
"""Response time in whole ms -> number of samples with exactly that time."""

Status = Literal["all", "ok", "ko"]

REPORT_PERCENTILES: tuple[int, ...] = (50, 75, 95, 99)
"""The percentiles spike reports, the same as Gatling's default percentiles1..4."""


def _rank(q: float, count: int) -> int:
    """The 1-based nearest rank for percentile `q` of `count` samples (exact decimal arithmetic)."""
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 100:
        raise BadInputError(
            f"percentile must be a number from 0 to 100, not {q!r}",
            fix="ask for a percentile such as 50, 95, 99 or 99.9",
        )
    # Fraction(repr(q)) reads 99.9 as 999/10, not as the binary float just above it.
    return max(1, math.ceil(Fraction(repr(q)) * count / 100))


def percentiles(hist: Histogram, qs: Iterable[float]) -> dict[float, int | None]:
    """Nearest-rank percentiles of a histogram for every q in `qs` (each 0..100), in one pass.

    Returns ``{q: value}``; every value is ``None`` when the histogram is
    empty. See the module docstring for the definition.
    """
    wanted = list(qs)
    total = sum(hist.values())
    if total == 0:
        for q in wanted:
            _rank(q, 1)  # still validate q
        return dict.fromkeys(wanted)
    ranks = sorted((_rank(q, total), q) for q in wanted)
    result: dict[float, int | None] = {}
    seen = 0
    i = 0
    for value in sorted(hist):
        seen += hist[value]
        while i < len(ranks) and ranks[i][0] <= seen:
            result[ranks[i][1]] = value
            i += 1
        if i == len(ranks):
            break
    return {q: result[q] for q in wanted}


def percentile(hist: Histogram, q: float) -> int | None:
    """The nearest-rank q-th percentile (0 <= q <= 100) of a histogram; None when it is empty.

    The smallest value v such that at least ``ceil(q/100 * N)`` of the N
    samples are <= v; q=100 gives the maximum, q=0 the minimum.
    """
    return percentiles(hist, (q,))[q]


def merge_histograms(hists: Iterable[Histogram]) -> Counter[int]:
    """The exact histogram of all samples of `hists` together (counts are added)."""
    merged: Counter[int] = Counter()
    for hist in hists:
        merged.update(hist)
    return merged


def java_round(x: float) -> int:
    """Java's ``Math.round``: round half up (towards +infinity), as Gatling rounds."""
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class LatencyStats:
    """Response-time summary of one set of requests, in whole ms (None when there are none).

    `mean` and `std_dev` are computed as Gatling computes them; `p50`..`p99`
    are exact nearest-rank percentiles.
    """

    count: int
    min: int | None
    max: int | None
    mean: int | None
    std_dev: int | None
    p50: int | None
    p75: int | None
    p95: int | None
    p99: int | None

    @classmethod
    def from_histogram(cls, hist: Histogram) -> LatencyStats:
        """Summarise a histogram (value -> count)."""
        count = sum(hist.values())
        if count == 0:
            return cls(0, None, None, None, None, None, None, None, None)
        total = sum(v * c for v, c in hist.items())
        total_sq = sum(v * v * c for v, c in hist.items())
        # Gatling converts the long sums to double before dividing; do the same.
        mean = float(total) / count
        variance = max(0.0, float(total_sq) / count - mean**2)
        ps = percentiles(hist, REPORT_PERCENTILES)
        return cls(
            count=count,
            min=min(hist),
            max=max(hist),
            mean=java_round(mean),
            std_dev=java_round(math.sqrt(variance)),
            p50=ps[50],
            p75=ps[75],
            p95=ps[95],
            p99=ps[99],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, keys sorted."""
        return {
            "count": self.count,
            "max": self.max,
            "mean": self.mean,
            "min": self.min,
            "p50": self.p50,
            "p75": self.p75,
            "p95": self.p95,
            "p99": self.p99,
            "std_dev": self.std_dev,
        }


@dataclass(frozen=True, eq=False)
class Latency:
    """The response times of one scope (everything, a request, a region, an injector).

    Keeps the exact OK and KO histograms, so any percentile can be asked for
    later with :meth:`percentile`; `all`, `ok` and `ko` summarise them.
    """

    ok_hist: Histogram = field(default_factory=dict)
    ko_hist: Histogram = field(default_factory=dict)

    @cached_property
    def all_hist(self) -> Histogram:
        """OK and KO together."""
        return merge_histograms((self.ok_hist, self.ko_hist))

    def histogram(self, status: Status = "all") -> Histogram:
        """The histogram of `status` ("all", "ok" or "ko")."""
        if status == "ok":
            return self.ok_hist
        if status == "ko":
            return self.ko_hist
        if status == "all":
            return self.all_hist
        raise BadInputError(f"status must be 'all', 'ok' or 'ko', not {status!r}")

    @cached_property
    def all(self) -> LatencyStats:
        return LatencyStats.from_histogram(self.all_hist)

    @cached_property
    def ok(self) -> LatencyStats:
        return LatencyStats.from_histogram(self.ok_hist)

    @cached_property
    def ko(self) -> LatencyStats:
        return LatencyStats.from_histogram(self.ko_hist)

    def percentile(self, q: float, status: Status = "all") -> int | None:
        """The exact nearest-rank q-th percentile (0..100) of `status` responses, in ms."""
        return percentile(self.histogram(status), q)

    def percentiles(self, qs: Sequence[float], status: Status = "all") -> dict[float, int | None]:
        """Several nearest-rank percentiles in one pass."""
        return percentiles(self.histogram(status), qs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no histograms), keys sorted."""
        return {"all": self.all.to_dict(), "ko": self.ko.to_dict(), "ok": self.ok.to_dict()}


@dataclass(frozen=True)
class ErrorCount:
    """How many times one error message occurred (KO request messages and ERROR records)."""

    message: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "message": self.message}


@dataclass(frozen=True)
class RegionSecond:
    """One region during one second of the run (requests binned by their start time)."""

    users_started: int
    requests: int
    ko: int
    p95: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ko": self.ko,
            "p95": self.p95,
            "requests": self.requests,
            "users_started": self.users_started,
        }


@dataclass(frozen=True)
class SecondStats:
    """One second of the run: index ``floor((t - start_at_ms) / 1000)``.

    Users are binned by their START time, requests by their start time;
    events before the shared start are put in second 0 (and also counted in
    ``MergedStats.early_users`` / ``early_requests``).
    """

    second: int
    users_started: int
    requests: int
    ko: int
    regions: Mapping[str, RegionSecond]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ko": self.ko,
            "regions": {name: self.regions[name].to_dict() for name in sorted(self.regions)},
            "requests": self.requests,
            "second": self.second,
            "users_started": self.users_started,
        }


@dataclass(frozen=True)
class InjectorSummary:
    """What one injector's log says about how it ran.

    `run_start_ms` is the RUN record's start (when injection began, after
    waiting for the shared start); `start_skew_ms` is the first request's
    start minus the shared start `start_at_ms`.
    """

    injector_id: str
    region: str
    run_start_ms: int | None
    first_request_start_ms: int | None
    start_skew_ms: int | None
    last_request_end_ms: int | None
    requests: int
    requests_ko: int
    users_started: int
    users_ended: int
    lines_read: int
    malformed_lines: int
    bytes_read: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_read": self.bytes_read,
            "first_request_start_ms": self.first_request_start_ms,
            "injector_id": self.injector_id,
            "last_request_end_ms": self.last_request_end_ms,
            "lines_read": self.lines_read,
            "malformed_lines": self.malformed_lines,
            "region": self.region,
            "requests": self.requests,
            "requests_ko": self.requests_ko,
            "run_start_ms": self.run_start_ms,
            "start_skew_ms": self.start_skew_ms,
            "users_ended": self.users_ended,
            "users_started": self.users_started,
        }


@dataclass(frozen=True, eq=False)
class MergedStats:
    """Exact statistics of a run, merged over every injector's simulation.log.

    Latencies are per scope: `latency` (everything), `by_request` (request
    name, prefixed by its group path "g1 / g2 / name" when in a group),
    `by_region` and `by_injector`; each keeps exact histograms for arbitrary
    percentiles. `errors` is sorted by count (descending), then message.
    `per_second` is dense from second 0 to the last second with an event.
    """

    start_at_ms: int
    files_read: int
    lines_read: int
    malformed_lines: int
    requests: int
    requests_ok: int
    requests_ko: int
    users_started: int
    users_ended: int
    early_users: int
    early_requests: int
    error_records: int
    group_records: int
    latency: Latency
    by_request: Mapping[str, Latency]
    by_region: Mapping[str, Latency]
    by_injector: Mapping[str, Latency]
    errors: tuple[ErrorCount, ...]
    per_second: tuple[SecondStats, ...]
    injectors: tuple[InjectorSummary, ...]

    def percentile(
        self,
        q: float,
        status: Status = "all",
        *,
        request: str | None = None,
        region: str | None = None,
        injector: str | None = None,
    ) -> int | None:
        """The exact nearest-rank q-th percentile in ms, globally or of one request/region/injector.

        At most one of `request`, `region`, `injector` may be given; an
        unknown name gives None (no samples).
        """
        chosen = [(k, v) for k, v in (("request", request), ("region", region), ("injector", injector)) if v]
        if len(chosen) > 1:
            raise BadInputError("ask for the percentile of one request, one region or one injector at a time")
        if not chosen:
            return self.latency.percentile(q, status)
        kind, name = chosen[0]
        scopes = {"request": self.by_request, "region": self.by_region, "injector": self.by_injector}[kind]
        scope = scopes.get(name)
        return scope.percentile(q, status) if scope is not None else percentile({}, q)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw histograms, JSON-able, with sorted keys at every level."""

        def by_name(scopes: Mapping[str, Latency]) -> dict[str, Any]:
            return {name: scopes[name].to_dict() for name in sorted(scopes)}

        return {
            "by_injector": by_name(self.by_injector),
            "by_region": by_name(self.by_region),
            "by_request": by_name(self.by_request),
            "early_requests": self.early_requests,
            "early_users": self.early_users,
            "error_records": self.error_records,
            "errors": [e.to_dict() for e in self.errors],
            "files_read": self.files_read,
            "group_records": self.group_records,
            "injectors": [i.to_dict() for i in self.injectors],
            "latency": self.latency.to_dict(),
            "lines_read": self.lines_read,
            "malformed_lines": self.malformed_lines,
            "per_second": [s.to_dict() for s in self.per_second],
            "requests": self.requests,
            "requests_ko": self.requests_ko,
            "requests_ok": self.requests_ok,
            "start_at_ms": self.start_at_ms,
            "users_ended": self.users_ended,
            "users_started": self.users_started,
        }
