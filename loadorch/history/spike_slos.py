"""Spike-specific SLOs computed from a run's merged per-second statistics (pure).

A steady-state SLO ("p95 <= 300 ms over the run") hides what matters in a
storm: how long the system took to come back, how much of the error budget
the storm itself burnt, and at which arrival rate it broke.

All three read ``MergedStats.per_second`` (seconds since the shared start,
requests binned by their start time).

*Per-second p95.* ``SecondStats`` has no global per-second percentile; each
region's ``RegionSecond.p95`` is exact. The per-second p95 used here is the
**largest regional p95** of that second, which is exact with one region and
otherwise an upper bound of the true p95 (if every region has 95% of its
samples at or under M, so do all samples together). Recovery is therefore
never reported earlier than it happened. An exact global figure needs
``SecondStats.p95`` (the merger already holds the per-(region, second)
histograms; adding them per second gives it).
"""

from __future__ import annotations

from dataclasses import dataclass

from loadorch.analysis.stats import MergedStats, SecondStats
from loadorch.errors import BadInputError
from loadorch.plan.model import Plan
from loadorch.profiles.model import Slos

RECOVERY_HOLD_S = 5
"""Seconds in a row that p95 must stay under the SLO to count as recovered: one good second
between bad ones is noise, five is a trend, and short enough for a storm that decays in a minute."""

BREAKING_WINDOW_S = 3
"""The trailing window (seconds) over which the error rate is smoothed before it is compared with
the SLO: a single second holds few requests at the start of a ramp, and one KO among them would
otherwise read as a 10-50% error rate."""

BREAKING_MIN_REQUESTS = 20
"""A window with fewer requests is not judged (too few to tell an error rate)."""


def second_p95(row: SecondStats) -> int | None:
    """The largest regional p95 of a second: exact with one region, an upper bound otherwise."""
    values = [r.p95 for r in row.regions.values() if r.requests and r.p95 is not None]
    return max(values) if values else None


def time_to_recover_s(
    stats: MergedStats, p95_slo_ms: float, peak_second: int, *, hold_s: int = RECOVERY_HOLD_S
) -> float | None:
    """Seconds from the peak of the planned curve until p95 is back under the SLO for good.

    Counting from `peak_second` (included), the first second from which the
    per-second p95 (see the module docstring) is at or under `p95_slo_ms`
    for `hold_s` seconds in a row; the result is that second minus
    `peak_second` (0 when the SLO held at the peak already). A second without
    requests breaks a streak (there is no evidence either way). None when
    it never recovers within the run.
    """
    if hold_s < 1:
        raise BadInputError(f"hold_s must be at least 1, not {hold_s}")
    if peak_second < 0:
        raise BadInputError(f"peak_second must be 0 or more, not {peak_second}")
    streak_from: int | None = None
    streak = 0
    for row in stats.per_second:
        if row.second < peak_second:
            continue
        p95 = second_p95(row)
        if p95 is not None and p95 <= p95_slo_ms:
            if streak == 0:
                streak_from = row.second
            streak += 1
            if streak >= hold_s and streak_from is not None:
                return float(streak_from - peak_second)
        else:
            streak, streak_from = 0, None
    return None


@dataclass(frozen=True)
class ErrorBudget:
    """How the run's error budget was spent inside and outside the spike window.

    The run's budget is ``error_rate_slo * all requests`` KO responses;
    ``budget_spent_spike_pct + budget_spent_steady_pct`` is the share of it
    used (over 100: the run broke its error-rate SLO).
    """

    spike_error_rate: float | None
    steady_error_rate: float | None
    budget_spent_spike_pct: float | None
    budget_spent_steady_pct: float | None
    spike_requests: int
    steady_requests: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "budget_spent_spike_pct": self.budget_spent_spike_pct,
            "budget_spent_steady_pct": self.budget_spent_steady_pct,
            "spike_error_rate": self.spike_error_rate,
            "spike_requests": self.spike_requests,
            "steady_error_rate": self.steady_error_rate,
            "steady_requests": self.steady_requests,
        }


def error_budget(stats: MergedStats, spike_window: tuple[float, float], error_rate_slo: float) -> ErrorBudget:
    """Error rates inside the spike window ``[from_s, to_s)`` and outside it, and the budget each spent."""
    from_s, to_s = spike_window
    if not 0 <= from_s < to_s:
        raise BadInputError(
            f"the spike window must be (from_s, to_s) with 0 <= from_s < to_s, not {spike_window}",
            fix="pass the seconds (since the start) when the storm begins and ends",
        )
    if not 0 < error_rate_slo <= 1:
        raise BadInputError(
            f"the error-rate SLO must be a fraction in (0, 1], not {error_rate_slo}",
            fix="e.g. 0.01 for 1%",
        )
    spike_req = spike_ko = steady_req = steady_ko = 0
    for row in stats.per_second:
        if from_s <= row.second < to_s:
            spike_req += row.requests
            spike_ko += row.ko
        else:
            steady_req += row.requests
            steady_ko += row.ko
    budget = error_rate_slo * (spike_req + steady_req)

    def spent(ko: int) -> float | None:
        return round(100 * ko / budget, 3) if budget else None

    return ErrorBudget(
        spike_error_rate=round(spike_ko / spike_req, 6) if spike_req else None,
        steady_error_rate=round(steady_ko / steady_req, 6) if steady_req else None,
        budget_spent_spike_pct=spent(spike_ko),
        budget_spent_steady_pct=spent(steady_ko),
        spike_requests=spike_req,
        steady_requests=steady_req,
    )


@dataclass(frozen=True)
class BreakingPoint:
    """The arrival rate the target held before its error rate crossed the SLO.

    `second` is the first second whose trailing-window error rate crossed;
    `rate_users_per_s` the highest users started in any one second before
    it (second 0's when it crossed at once).
    """

    rate_users_per_s: int
    second: int
    window_error_rate: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "rate_users_per_s": self.rate_users_per_s,
            "second": self.second,
            "window_error_rate": self.window_error_rate,
        }


def breaking_point(
    stats: MergedStats,
    error_rate_slo: float,
    *,
    window_s: int = BREAKING_WINDOW_S,
    min_requests: int = BREAKING_MIN_REQUESTS,
) -> BreakingPoint | None:
    """Where the error rate, smoothed over `window_s` trailing seconds, first exceeded the SLO; None if never."""
    if window_s < 1:
        raise BadInputError(f"window_s must be at least 1, not {window_s}")
    if not 0 <= error_rate_slo < 1:
        raise BadInputError(f"the error-rate SLO must be a fraction in [0, 1), not {error_rate_slo}")
    rows = stats.per_second
    for i, row in enumerate(rows):
        window = rows[max(0, i - window_s + 1) : i + 1]
        requests = sum(r.requests for r in window)
        if requests < min_requests:
            continue
        rate = sum(r.ko for r in window) / requests
        if rate > error_rate_slo:
            before = rows[:i] or rows[:1]
            return BreakingPoint(max(r.users_started for r in before), row.second, round(rate, 6))
    return None


def spike_window(plan: Plan) -> tuple[int, int, int]:
    """(peak second, first and last+1 second of the spike) from the plan's curve.

    The spike is where the planned rate is above halfway between its lowest and its peak; the
    peak second is the first second at the peak rate.
    """
    rates = plan.curve.users_per_second()
    if not rates:
        return 0, 0, 0
    low, high = min(rates), max(rates)
    peak = rates.index(high)
    half = low + (high - low) / 2
    above = [i for i, r in enumerate(rates) if r > half] or [peak]
    return peak, above[0], above[-1] + 1


def spike_slo_summary(stats: MergedStats, plan: Plan, slos: Slos) -> dict[str, object]:
    """The spike SLOs of one run, for summary.json (each None where its SLO is not set)."""
    peak, start, end = spike_window(plan)
    p95 = next((s.max_ms for s in slos.latency if s.percentile == 95 and s.request is None), None)
    out: dict[str, object] = {"peak_second": peak, "spike_window_s": [start, end]}
    out["p95_slo_ms"] = p95
    out["time_to_recover_s"] = time_to_recover_s(stats, p95, peak) if p95 is not None else None
    if slos.error_rate_max is not None:
        out["error_budget"] = error_budget(stats, (start, end), slos.error_rate_max).to_dict()
        point = breaking_point(stats, slos.error_rate_max)
        out["breaking_point"] = point.to_dict() if point is not None else None
    return out
