"""Compaction of per-second counts to a curve: bounds checked here independently; transform maths."""

from __future__ import annotations

import math
import random
from array import array

import pytest

from loadorch.curve import RateCurve
from loadorch.errors import BadInputError
from loadorch.replay.compact import compact_curve, fit_report, planned_per_second, transform, window_for
from loadorch.replay.sources import SecondCounts


def poisson(rng: random.Random, lam: float) -> int:
    if lam < 30:  # Knuth: exact for small means
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def diurnal(
    seconds: int, low: float, high: float, spikes: list[tuple[int, int, float]], seed: int
) -> SecondCounts:
    rng = random.Random(seed)
    values = array("q")
    for t in range(seconds):
        rate = low + (high - low) * (1 - math.cos(2 * math.pi * t / 86_400)) / 2
        for start, length, extra in spikes:
            if start <= t < start + length:
                rate += extra * min(1.0, (t - start) / 20)
        values.append(poisson(rng, rate))
    return SecondCounts(1_790_000_000_000, values)


def check_bounds(
    counts: SecondCounts, curve: RateCurve, total_bound: float, minute_bound: float, floor: float
) -> None:
    """The documented bounds, evaluated with RateCurve.users_between (not the module's own code)."""
    recorded = list(counts.counts)
    total = sum(recorded)
    assert curve.points[0][0] == 0 and curve.duration_s == len(recorded)
    assert abs(curve.users_between(0, len(recorded)) - total) <= total_bound * total
    for start in range(0, len(recorded), 60):
        end = min(start + 60, len(recorded))
        got = sum(recorded[start:end])
        error = abs(curve.users_between(start, end) - got)
        assert error <= max(minute_bound * got, floor) + 1e-6, (start, got, error)


@pytest.mark.parametrize(
    ("low", "high", "spikes"),
    [
        (200, 2000, [(30_000, 600, 4000), (50_000, 300, 8000), (70_000, 1200, 2500)]),
        (40, 400, [(20_000, 900, 1500)]),
        (0.2, 3, [(10_000, 120, 50)]),  # near-empty windows: the absolute floor
    ],
)
def test_day_long_curves_are_compact_and_within_bounds(low: float, high: float, spikes: list) -> None:
    counts = diurnal(86_400, low, high, spikes, seed=int(high))
    curve = compact_curve(counts)
    check_bounds(counts, curve, 0.01, 0.02, 5.0)
    segments = sum(1 for _ in curve.segments())
    assert segments <= 1440  # never one per second, at most about one per window
    if low >= 40:
        assert segments <= 500


def test_spike_edges_are_followed() -> None:
    values = array("q", [100] * 600 + [2000] * 120 + [100] * 600)
    curve = compact_curve(SecondCounts(0, values))
    assert curve.users_between(600, 720) == pytest.approx(240_000, rel=1e-9)
    assert curve.rate_at(650) == pytest.approx(2000)
    assert sum(1 for _ in curve.segments()) == 3


def test_tighter_bounds_mean_more_segments() -> None:
    counts = diurnal(7200, 50, 500, [], seed=3)
    loose = compact_curve(counts, max_minute_error=0.05)
    tight = compact_curve(counts, max_minute_error=0.01)
    check_bounds(counts, tight, 0.01, 0.01, 5.0)
    assert sum(1 for _ in loose.segments()) < sum(1 for _ in tight.segments())


def test_empty_recording_is_an_error() -> None:
    with pytest.raises(BadInputError, match="no requests"):
        compact_curve(SecondCounts(0, array("q", [0, 0, 0])))


def test_transform_speedup_scale_and_peak() -> None:
    curve = RateCurve.from_points([(0, 10), (60, 30), (120, 30)])
    fast = transform(curve, speedup=4)
    assert fast.points == ((0, 40), (15, 120), (30, 120))
    assert fast.total_users == pytest.approx(curve.total_users)
    big = transform(curve, scale=3, speedup=2)
    assert big.duration_s == 60 and big.total_users == pytest.approx(3 * curve.total_users)
    peaked = transform(curve, speedup=2, peak_rate=300)
    assert peaked.peak_rate == pytest.approx(300) and peaked.duration_s == 60
    assert peaked.points[0][1] == pytest.approx(100)
    for bad in ({"speedup": 0}, {"scale": -1}, {"peak_rate": 0}, {"scale": 2, "peak_rate": 5}):
        with pytest.raises(BadInputError):
            transform(curve, **bad)  # type: ignore[arg-type]


def test_fit_report() -> None:
    counts = SecondCounts(0, array("q", [10] * 120))
    exact = fit_report(counts, RateCurve.from_points([(0, 10), (120, 10)]))
    assert exact["total_error"] == 0 and exact["worst_minute_error"] == 0 and exact["segments"] == 1
    assert exact["mape_pct_over_active_seconds"] == 0 and exact["correlation"] is None
    off = fit_report(counts, RateCurve.from_points([(0, 11), (120, 11)]), window_s=60)
    assert off["total_error"] == pytest.approx(0.1) and off["worst_minute_error"] == pytest.approx(0.1)
    assert off["mape_pct_over_active_seconds"] == pytest.approx(10)
    ramp = SecondCounts(0, array("q", range(100)))
    fitted = fit_report(ramp, RateCurve.from_points([(0, 0), (100, 100)]))
    assert fitted["correlation"] == pytest.approx(1.0)


def test_short_recordings_are_judged_on_shorter_windows_so_a_spike_keeps_its_shape() -> None:
    assert (window_for(35), window_for(3_000), window_for(86_400)) == (5, 30, 60)
    # 35 s: 10 s at 40/s, a jump to 160/s for 15 s, back to 40/s for 10 s
    recorded = [40] * 10 + [160] * 15 + [40] * 10
    curve = compact_curve(SecondCounts(0, array("q", recorded)))
    planned = [curve.users_between(i, i + 1) for i in range(35)]
    assert max(abs(p - r) / r for p, r in zip(planned, recorded, strict=True)) < 0.05


def test_planned_per_second_matches_users_between() -> None:
    curve = RateCurve.from_points([(0, 0), (2.5, 10), (2.5, 4), (7, 4), (9, 0)])
    assert planned_per_second(curve, 10) == pytest.approx([curve.users_between(i, i + 1) for i in range(10)])
