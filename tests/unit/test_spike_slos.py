"""Spike SLOs from per-second statistics: time to recover, error budget, breaking point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadorch.analysis import InjectorLog, analyze_logs
from loadorch.analysis.stats import Latency, MergedStats, RegionSecond, SecondStats
from loadorch.errors import BadInputError
from loadorch.history.spike_slos import breaking_point, error_budget, second_p95, time_to_recover_s

FIXTURE = Path(__file__).parents[1] / "fixtures" / "gatling-3.11.5"


def stats_of(rows: list[dict[str, tuple[int, int, int, int | None]]]) -> MergedStats:
    """MergedStats with only per_second filled in; each row: region -> (users, requests, ko, p95)."""
    per_second = []
    for second, regions in enumerate(rows):
        by_region = {name: RegionSecond(u, r, k, p) for name, (u, r, k, p) in regions.items()}
        per_second.append(
            SecondStats(
                second=second,
                users_started=sum(v.users_started for v in by_region.values()),
                requests=sum(v.requests for v in by_region.values()),
                ko=sum(v.ko for v in by_region.values()),
                regions=by_region,
            )
        )
    total = sum(s.requests for s in per_second)
    ko = sum(s.ko for s in per_second)
    empty = Latency()
    return MergedStats(
        start_at_ms=0,
        files_read=1,
        lines_read=0,
        malformed_lines=0,
        requests=total,
        requests_ok=total - ko,
        requests_ko=ko,
        users_started=sum(s.users_started for s in per_second),
        users_ended=0,
        early_users=0,
        early_requests=0,
        error_records=0,
        group_records=0,
        latency=empty,
        by_request={},
        by_region={},
        by_injector={},
        errors=(),
        per_second=tuple(per_second),
        injectors=(),
    )


def p95_series(values: list[int | None]) -> MergedStats:
    return stats_of([{"eu": (10, 0 if v is None else 20, 0, v)} for v in values])


@pytest.fixture(scope="module")
def fixture_stats() -> MergedStats:
    meta = json.loads((FIXTURE / "fixture.json").read_text())
    logs = [InjectorLog(i, v["region"], FIXTURE / i / "simulation.log") for i, v in meta["injectors"].items()]
    return analyze_logs(logs, meta["start_at_ms"], workers=1)


def test_second_p95_is_the_worst_region() -> None:
    row = stats_of([{"eu": (1, 10, 0, 80), "us": (1, 10, 0, 120), "ap": (0, 0, 0, None)}]).per_second[0]
    assert second_p95(row) == 120


def test_recovers_after_five_good_seconds() -> None:
    #                  0    1    2    3    4    5    6    7    8    9    10   11   12
    stats = p95_series([50, 90, 400, 600, 500, 150, 380, 150, 140, 130, 120, 110, 100])
    assert time_to_recover_s(stats, 200, peak_second=3) == 4.0  # from second 7
    assert time_to_recover_s(stats, 200, peak_second=3, hold_s=1) == 2.0  # second 5


def test_recovered_at_the_peak_is_zero_and_never_is_none() -> None:
    assert time_to_recover_s(p95_series([10] * 10), 200, peak_second=2) == 0.0
    assert time_to_recover_s(p95_series([10, 500, 500, 100, 100, 100, 100]), 200, peak_second=1) is None


def test_empty_seconds_break_the_streak() -> None:
    stats = p95_series([500, 100, 100, None, 100, 100, 100, 100, 100])
    assert time_to_recover_s(stats, 200, peak_second=0) == 4.0


def test_recovery_validation() -> None:
    with pytest.raises(BadInputError):
        time_to_recover_s(p95_series([1]), 200, peak_second=0, hold_s=0)


def test_error_budget_split() -> None:
    # steady: 100 + 100 requests, 1 KO; spike (seconds 1..2): 400 requests, 20 KO
    stats = stats_of(
        [
            {"eu": (10, 100, 1, 10)},
            {"eu": (40, 200, 5, 10)},
            {"eu": (40, 200, 15, 10)},
            {"eu": (10, 100, 0, 10)},
        ]
    )
    budget = error_budget(stats, (1, 3), error_rate_slo=0.05)  # budget: 0.05 * 600 = 30 KO
    assert budget.spike_error_rate == 0.05 and budget.steady_error_rate == 0.005
    assert budget.budget_spent_spike_pct == pytest.approx(66.667)
    assert budget.budget_spent_steady_pct == pytest.approx(3.333)
    assert (budget.spike_requests, budget.steady_requests) == (400, 200)
    with pytest.raises(BadInputError):
        error_budget(stats, (3, 1), 0.05)
    with pytest.raises(BadInputError):
        error_budget(stats, (1, 3), 0)


def test_error_budget_without_requests() -> None:
    budget = error_budget(stats_of([]), (0, 5), 0.01)
    assert budget.to_dict()["spike_error_rate"] is None and budget.budget_spent_spike_pct is None


def test_breaking_point_smooths_a_lone_error() -> None:
    rows = [
        {"eu": (10, 30, 0, 10)},
        {"eu": (20, 30, 3, 10)},  # one bad second: 10%, but 3/60 = 5% over the window
        {"eu": (30, 30, 0, 10)},
        {"eu": (40, 30, 0, 10)},
        {"eu": (50, 30, 9, 10)},
        {"eu": (60, 30, 12, 10)},  # window 4..6? no: seconds 3..5 = 21/90 > 5%
    ]
    point = breaking_point(stats_of(rows), 0.05)
    assert point is not None
    assert (point.second, point.rate_users_per_s) == (4, 40)  # seconds 2..4: 9/90 = 10% > 5%
    assert breaking_point(stats_of(rows), 0.5) is None
    assert breaking_point(stats_of(rows), 0.05, window_s=1).second == 1  # type: ignore[union-attr]


def test_breaking_point_needs_enough_requests() -> None:
    rows = [{"eu": (1, 2, 1, 10)}, {"eu": (1, 2, 1, 10)}]
    assert breaking_point(stats_of(rows), 0.05) is None
    assert breaking_point(stats_of(rows), 0.05, min_requests=2) == breaking_point(
        stats_of(rows), 0.05, min_requests=1
    )


def test_on_real_gatling_logs(fixture_stats: MergedStats) -> None:
    # per second (requests, ko): (21,0) (55,0) (87,3) (95,9) (106,3) (87,5) (43,0); worst regional p95s
    # 130 186 233 231 191 167 238
    budget = error_budget(fixture_stats, (3, 6), 0.05)
    assert budget.spike_requests + budget.steady_requests == fixture_stats.requests
    assert (budget.spike_requests, budget.steady_requests) == (288, 206)
    assert budget.budget_spent_spike_pct == pytest.approx(100 * 17 / (0.05 * 494), abs=1e-3)
    point = breaking_point(fixture_stats, 0.05)
    assert point is not None and (point.second, point.rate_users_per_s) == (3, 44)  # 12/237 over 1..3
    assert time_to_recover_s(fixture_stats, 200, peak_second=3, hold_s=2) == 1.0
    assert time_to_recover_s(fixture_stats, 200, peak_second=3) is None  # the run ends too soon
