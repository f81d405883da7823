"""Stop criteria: parsing --abort-when, and when a criterion holds (pure, on hand-made seconds)."""

from __future__ import annotations

from collections import Counter

import pytest

from loadorch.errors import BadInputError
from loadorch.profiles.model import StopCriterion
from loadorch.run.stop import StopWatch, parse_abort_when


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("error-rate>50% for 5s", {"error_rate_above": 0.5, "for_s": 5}),
        ("error_rate>0.25 for 3s", {"error_rate_above": 0.25, "for_s": 3}),
        ("p95>2000ms for 10s", {"latency_percentile": 95, "latency_above_ms": 2000, "for_s": 10}),
        ("P99 > 800 ms for 2 s", {"latency_percentile": 99, "latency_above_ms": 800, "for_s": 2}),
        (
            "health http://127.0.0.1:8080/health for 10s",
            {"health_url": "http://127.0.0.1:8080/health", "for_s": 10},
        ),
    ],
)
def test_abort_when_forms(text: str, expected: dict[str, object]) -> None:
    criterion = parse_abort_when(text)
    assert {k: getattr(criterion, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("error-rate>50%", "is not a stop criterion"),
        ("p90>100ms for 5s", "is not a stop criterion"),
        ("error-rate>150% for 5s", "less than or equal to 1"),
        ("health ftp://127.0.0.1/ for 5s", "http:// or https://"),
        ("p95>100ms for 0s", "greater than or equal to 1"),
    ],
)
def test_bad_abort_when_says_what_and_how(text: str, why: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_abort_when(text)
    assert why in caught.value.render()
    assert "error-rate>50% for 5s" in (caught.value.fix or "")


def seconds(spec: dict[int, tuple[int, int, int]]) -> Counter[tuple[int, bytes, int]]:
    """second -> (OK responses, KO responses, response ms of each)."""
    latency: Counter[tuple[int, bytes, int]] = Counter()
    for second, (ok, ko, rt) in spec.items():
        latency[(second, b"OK", rt)] += ok
        latency[(second, b"KO", rt)] += ko
    return latency


def test_error_rate_must_hold_every_second_of_the_window() -> None:
    watch = StopWatch([StopCriterion(error_rate_above=0.5, for_s=3)])
    bad = seconds({s: (2, 8, 5) for s in range(10)})
    assert watch.check([bad], elapsed_s=3.5) is None  # second 1 is the newest settled: no 3-second window yet
    fired = watch.check([bad], elapsed_s=5.2)
    assert fired is not None and fired.startswith("error rate above 50% for 3 s (seconds 1-3")
    one_good = seconds({**{s: (2, 8, 5) for s in range(10)}, 5: (9, 1, 5)})
    assert watch.check([one_good], elapsed_s=8.0) is None  # window 4-6 holds a good second
    assert watch.check([one_good], elapsed_s=10.0) is not None  # window 6-8 is bad again


def test_a_second_without_responses_breaks_the_streak() -> None:
    watch = StopWatch([StopCriterion(error_rate_above=0.5, for_s=2)])
    gap = seconds({0: (0, 10, 5), 2: (0, 10, 5)})
    assert watch.check([gap], elapsed_s=4.0) is None


def test_latency_percentile_over_several_injectors() -> None:
    watch = StopWatch([StopCriterion(latency_above_ms=100, latency_percentile=50, for_s=2)])
    fast = seconds({s: (10, 0, 20) for s in range(6)})
    slow = seconds({s: (10, 0, 500) for s in range(6)})
    assert watch.check([fast, slow], elapsed_s=5.0) is None  # p50 of both is 20 ms
    slower = seconds({s: (11, 0, 500) for s in range(6)})
    fired = watch.check([fast, slower], elapsed_s=5.0)
    assert fired is not None and "p50 latency above 100 ms" in fired and "500 ms" in fired


def test_health_probe_counts_failing_seconds() -> None:
    watch = StopWatch([StopCriterion(health_url="http://127.0.0.1:9/health", for_s=2)])
    probe = watch.probes["http://127.0.0.1:9/health"]
    assert probe.probe() is not None  # port 9 on loopback refuses
    probe.failing_streak = 1
    assert watch.check([], elapsed_s=10) is None
    probe.failing_streak = 2
    fired = watch.check([], elapsed_s=10)
    assert fired is not None and fired.startswith("health check http://127.0.0.1:9/health failing for 2 s")
