"""Exact percentiles and Gatling-compatible summaries from histograms (loadorch.analysis.stats)."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from loadorch.analysis.stats import (
    Latency,
    LatencyStats,
    java_round,
    merge_histograms,
    percentile,
    percentiles,
)
from loadorch.errors import BadInputError


def brute_nearest_rank(values: list[int], q: float) -> int:
    """The definition, literally: the smallest v with at least ceil(q/100*N) samples <= v."""
    need = max(1, math.ceil(Fraction(str(q)) * len(values) / 100))
    for v in sorted(set(values)):
        if sum(1 for x in values if x <= v) >= need:
            return v
    raise AssertionError("unreachable")


def test_percentile_matches_the_definition_on_random_samples() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        n = rng.randint(1, 60)
        values = [int(rng.lognormvariate(3, 1)) for _ in range(n)]
        hist = Counter(values)
        for q in (0, 0.1, 1, 10, 25, 33.3, 50, 66.7, 75, 90, 95, 99, 99.5, 99.9, 100):
            assert percentile(hist, q) == brute_nearest_rank(values, q), (values, q)


def test_small_known_cases() -> None:
    hist = Counter([15, 20, 35, 40, 50])
    assert percentile(hist, 0) == 15
    assert percentile(hist, 5) == 15
    assert percentile(hist, 30) == 20
    assert percentile(hist, 40) == 20
    assert percentile(hist, 50) == 35
    assert percentile(hist, 100) == 50
    assert percentile({7: 1}, 99) == 7


def test_decimal_percentiles_are_exact() -> None:
    values = list(range(1, 1001))
    hist = Counter(values)
    # 99.9% of 1000 is exactly 999: the binary float 99.9 must not push it to 1000
    assert percentile(hist, 99.9) == 999
    assert percentile(hist, 0.1) == 1
    assert percentile(hist, 95) == 950
    assert percentile(hist, 95.0001) == 951
    # 0.07 * 10000 / 100 is 7.000000000000001 in floats; exactly 7 as a decimal
    assert percentile(Counter(range(1, 10_001)), 0.07) == 7


def test_percentiles_in_one_pass_equal_single_calls() -> None:
    hist = Counter({1: 5, 3: 1, 10: 90, 250: 3, 3000: 1})
    qs = [99, 50, 0, 100, 75, 99.9]
    assert percentiles(hist, qs) == {q: percentile(hist, q) for q in qs}
    assert list(percentiles(hist, qs)) == qs


def test_empty_histogram_has_no_percentile() -> None:
    assert percentile({}, 50) is None
    assert percentiles(Counter(), [50, 99]) == {50: None, 99: None}


@pytest.mark.parametrize("q", [-1, 100.5, float("nan"), True])
def test_percentile_outside_0_100_is_bad_input(q: float) -> None:
    with pytest.raises(BadInputError, match="from 0 to 100"):
        percentile({1: 1}, q)
    with pytest.raises(BadInputError):
        percentile({}, q)


def test_java_round_is_half_up() -> None:
    assert [java_round(x) for x in (0.5, 1.5, 2.5, -0.5, 2.4999, 2.5001)] == [1, 2, 3, 0, 2, 3]


def test_latency_stats_like_gatling() -> None:
    stats = LatencyStats.from_histogram(Counter([1, 2]))
    assert stats.mean == 2  # 1.5 rounds half up, as Java's Math.round does
    assert stats.std_dev == 1  # sqrt(2.5 - 2.25) = 0.5 -> 1
    values = [3, 5, 8, 8, 13, 21, 34, 250]
    stats = LatencyStats.from_histogram(Counter(values))
    mean = sum(values) / len(values)
    assert stats.count == 8
    assert (stats.min, stats.max) == (3, 250)
    assert stats.mean == math.floor(mean + 0.5)
    assert stats.std_dev == math.floor(math.sqrt(sum(v * v for v in values) / 8 - mean**2) + 0.5)
    assert (stats.p50, stats.p75, stats.p95, stats.p99) == (8, 21, 250, 250)
    assert stats.to_dict() == {
        "count": 8,
        "max": 250,
        "mean": stats.mean,
        "min": 3,
        "p50": 8,
        "p75": 21,
        "p95": 250,
        "p99": 250,
        "std_dev": stats.std_dev,
    }


def test_constant_samples_have_zero_deviation() -> None:
    stats = LatencyStats.from_histogram({7: 1_000_000})
    assert (stats.mean, stats.std_dev, stats.p99) == (7, 0, 7)


def test_empty_latency_stats() -> None:
    stats = LatencyStats.from_histogram({})
    assert stats.count == 0
    assert stats.to_dict()["p95"] is None


def test_merged_histograms_give_the_percentiles_of_all_samples() -> None:
    rng = random.Random(99)
    parts = [[rng.randint(0, 500) for _ in range(rng.randint(0, 300))] for _ in range(5)]
    merged = merge_histograms(Counter(p) for p in parts)
    everything = [v for p in parts for v in p]
    assert merged == Counter(everything)
    for q in (50, 95, 99, 99.9):
        assert percentile(merged, q) == brute_nearest_rank(everything, q)


def test_latency_scopes_by_status() -> None:
    latency = Latency(ok_hist=Counter([1, 2, 3, 4]), ko_hist=Counter([100, 200]))
    assert latency.all.count == 6
    assert latency.ok.max == 4
    assert latency.ko.min == 100
    assert latency.percentile(50) == 3
    assert latency.percentile(50, "ok") == 2
    assert latency.percentile(50, "ko") == 100
    assert latency.percentiles([0, 100], "all") == {0: 1, 100: 200}
    assert set(latency.to_dict()) == {"all", "ko", "ok"}
    with pytest.raises(BadInputError):
        latency.histogram("failed")  # type: ignore[arg-type]
