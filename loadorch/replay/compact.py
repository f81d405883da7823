"""Per-second counts -> a compact RateCurve within stated error bounds, and how well a curve fits.

The bounds (`compact_curve`):

* windows: the recording is cut into aligned windows of `window_s` seconds from its first
  second (the last one may be shorter): a minute, or a hundredth of a short recording, at least
  5 s (`window_for`), so a spike of a few minutes keeps its shape. For each window w with recorded count W_w, the curve's
  integral over the window must differ from W_w by at most
  ``tol_w = max(max_minute_error * W_w, minute_floor)``. The absolute floor (default 5
  arrivals) keeps near-empty windows, where 2% is a fraction of one request, from forcing one
  segment per window.
* total: the integral over the whole span differs from the recorded total by at most
  ``max_total_error * total``.

The fit: greedy segmentation from left to right. Each segment [a, b) is the least-squares line
through its per-second counts (sampled at second midpoints, whose integral over [a, b) equals the
recorded count exactly; if the line would go below zero, the ramp from 0 with the same integral
is used). Because every segment's integral is exact, the total error is zero up to floating
point, and a window's error only comes from the at most two segments that cross its edges. So a
segment is accepted when every window it covers completely is within tol_w and every window it
covers partly is within tol_w / 2, which guarantees the bound for every window. The longest
acceptable segment is found by doubling then bisecting its length. Segments are independent, so
the curve may jump between them (equal-time points, which RateCurve supports). Any segment that
reaches the next window edge is acceptable, so there are never more segments than about one per
window, whatever the per-second noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

from loadorch.curve import RateCurve
from loadorch.errors import BadInputError
from loadorch.replay.sources import SecondCounts

WINDOW_S = 60
DEFAULT_MINUTE_FLOOR = 5.0


def window_for(seconds: int) -> int:
    """The error windows' length: a minute, shorter for short recordings.

    A recording of a few minutes or less has few minutes (or none whole), and a bound per minute
    would say nothing about its shape: a second-scale spike would become one straight line. The
    windows are a hundredth of the recording, between 5 s and 60 s.
    """
    return max(5, min(WINDOW_S, seconds // 100))


class _Fitter:
    def __init__(
        self, counts: Sequence[int], max_minute_error: float, minute_floor: float, window_s: int = WINDOW_S
    ) -> None:
        self.window_s = window_s
        self.n = len(counts)
        self.p0 = [0, *accumulate(counts)]
        self.p1 = [0, *accumulate(i * c for i, c in enumerate(counts))]
        self.tol = []
        for start in range(0, self.n, window_s):
            recorded = self.p0[min(start + window_s, self.n)] - self.p0[start]
            self.tol.append(max(max_minute_error * recorded, minute_floor))

    def line(self, a: int, b: int) -> tuple[float, float]:
        """Least-squares rates at a and b of the line through counts[a:b], kept >= 0."""
        n = b - a
        total = self.p0[b] - self.p0[a]
        mean = total / n
        if n == 1:
            return mean, mean
        # sum over i of (i + 0.5 - a - n/2) * c_i, and sum of (x - mid)^2 = n (n^2 - 1) / 12
        moment = (self.p1[b] - self.p1[a]) - (a + n / 2 - 0.5) * total
        slope = moment / (n * (n * n - 1) / 12)
        start, end = mean - slope * n / 2, mean + slope * n / 2
        if start < 0:
            return 0.0, 2 * mean
        if end < 0:
            return 2 * mean, 0.0
        return start, end

    def error_at(self, a: int, b: int, ra: float, rb: float, x: int) -> float:
        """Curve minus recorded arrivals over [a, x)."""
        dx = x - a
        return ra * dx + (rb - ra) * dx * dx / (2 * (b - a)) - (self.p0[x] - self.p0[a])

    def acceptable(self, a: int, b: int) -> bool:
        if b - a == 1:
            return True
        ra, rb = self.line(a, b)
        window = a // self.window_s
        x, err_x = a, 0.0
        while x < b:
            w_start = window * self.window_s
            w_end = min(w_start + self.window_s, self.n)
            y = min(w_end, b)
            err_y = 0.0 if y == b else self.error_at(a, b, ra, rb, y)
            whole = x == w_start and y == w_end
            if abs(err_y - err_x) > (self.tol[window] if whole else self.tol[window] / 2):
                return False
            x, err_x, window = y, err_y, window + 1
        return True

    def longest_from(self, a: int) -> int:
        good, length = a + 1, self.window_s
        while True:
            b = min(a + length, self.n)
            if not self.acceptable(a, b):
                bad = b
                break
            good = b
            if b == self.n:
                return b
            length *= 2
        while bad - good > 1:
            mid = (good + bad) // 2
            if self.acceptable(a, mid):
                good = mid
            else:
                bad = mid
        return good


def compact_curve(
    counts: SecondCounts,
    *,
    max_total_error: float = 0.01,
    max_minute_error: float = 0.02,
    minute_floor: float = DEFAULT_MINUTE_FLOOR,
    window_s: int | None = None,
) -> RateCurve:
    """A RateCurve with few segments through per-second counts; times from the first second.

    See the module docstring for the exact bounds and the method; `window_s` (default:
    `window_for` the recording's length) replaces the minute. Raises BadInputError for an
    empty or all-zero recording or non-positive tolerances.
    """
    values = list(counts.counts)
    if not values or sum(values) <= 0:
        raise BadInputError("the recording has no requests to build a curve from")
    if max_total_error <= 0 or max_minute_error <= 0 or minute_floor < 0:
        raise BadInputError(
            "error bounds must be > 0 (and the minute floor >= 0)",
            fix="e.g. max_total_error=0.01, max_minute_error=0.02",
        )
    fitter = _Fitter(values, max_minute_error, minute_floor, window_s or window_for(len(values)))
    points: list[tuple[float, float]] = []
    a = 0
    while a < fitter.n:
        b = fitter.longest_from(a)
        ra, rb = fitter.line(a, b)
        if not points or points[-1][1] != ra:
            points.append((float(a), ra))
        points.append((float(b), rb))
        a = b
    if len(points) == 1:
        points.append((float(fitter.n), points[0][1]))
    curve = RateCurve.from_points(points).simplified()
    total = fitter.p0[-1]
    drift = abs(curve.total_users - total)
    if drift > max_total_error * total:  # cannot happen with exact segment integrals; a guard
        raise AssertionError(f"compacted curve total drifted by {drift} of {total}")
    return curve


def transform(
    curve: RateCurve, *, scale: float = 1.0, speedup: float = 1.0, peak_rate: float | None = None
) -> RateCurve:
    """Replay faster and/or bigger.

    speedup divides every time and multiplies every rate, so the total stays the same (times
    scale); scale multiplies rates (and the total). peak_rate instead rescales the (sped-up)
    curve so that its highest rate equals peak_rate; it cannot be combined with scale.
    """
    if speedup <= 0 or not math.isfinite(speedup):
        raise BadInputError(f"speedup must be a number > 0, not {speedup}", fix="e.g. --speedup 2")
    if scale < 0 or not math.isfinite(scale):
        raise BadInputError(f"scale must be a number >= 0, not {scale}", fix="e.g. --scale 10")
    if peak_rate is not None:
        if scale != 1.0:
            raise BadInputError("give either a scale or a peak rate, not both", fix="drop one of them")
        if peak_rate <= 0 or not math.isfinite(peak_rate):
            raise BadInputError(f"peak rate must be > 0 per s, not {peak_rate}", fix="e.g. --peak-rate 5000")
        if curve.peak_rate <= 0:
            raise BadInputError("the curve has no traffic to rescale to a peak rate")
        scale = peak_rate / (curve.peak_rate * speedup)
    factor = scale * speedup
    return RateCurve(tuple((t / speedup, r * factor) for t, r in curve.points))


def planned_per_second(curve: RateCurve, seconds: int) -> list[float]:
    """The curve's arrivals in each second [i, i + 1) for i < seconds, in one sweep (not O(n * segments))."""
    cumulative = [0.0] * (seconds + 1)
    segments = list(curve.segments())
    index, before = 0, 0.0
    for k in range(seconds + 1):
        while index < len(segments) and segments[index].end_s <= k:
            before += segments[index].users
            index += 1
        value = before
        if index < len(segments):
            seg = segments[index]
            if k > seg.start_s:
                dx = k - seg.start_s
                value += seg.start_rate * dx + (seg.end_rate - seg.start_rate) * dx * dx / (
                    2 * seg.duration_s
                )
        cumulative[k] = value
    return [cumulative[i + 1] - cumulative[i] for i in range(seconds)]


def fit_report(
    counts: SecondCounts, curve: RateCurve, *, min_window_count: int = 100, window_s: int | None = None
) -> dict[str, float | int | None]:
    """How well `curve` (times from counts.start_ms) matches the recorded counts.

    total_error: |curve total - recorded total| / recorded total over the recording's span.
    worst_minute_error: the largest |error| / recorded count over aligned 60-s windows that hold
    at least `min_window_count` requests (relative errors of near-empty windows mean little);
    worst_minute_abs_error: the largest absolute error over all windows. mape_pct_over_active_seconds:
    mean |planned - recorded| / recorded over seconds with traffic, in %. correlation: Pearson's r of
    the per-second series (None when either is constant). Also used to compare an achieved run
    with its recording.
    """
    recorded = list(counts.counts)
    planned = planned_per_second(curve, len(recorded))
    total = sum(recorded)
    planned_total = sum(planned)
    worst_rel, worst_abs = 0.0, 0.0
    window = window_s or window_for(len(recorded))
    for start in range(0, len(recorded), window):
        got = sum(recorded[start : start + window])
        err = abs(sum(planned[start : start + window]) - got)
        worst_abs = max(worst_abs, err)
        if got >= min_window_count:
            worst_rel = max(worst_rel, err / got)
    active = [(p, r) for p, r in zip(planned, recorded, strict=True) if r > 0]
    mape = 100 * sum(abs(p - r) / r for p, r in active) / len(active) if active else None
    return {
        "segments": sum(1 for _ in curve.segments()),
        "seconds": len(recorded),
        "recorded_total": total,
        "planned_total": planned_total,
        "total_error": abs(planned_total - total) / total if total else None,
        "worst_minute_error": worst_rel,
        "worst_minute_abs_error": worst_abs,
        "window_s": window,
        "mape_pct_over_active_seconds": mape,
        "correlation": pearson(planned, [float(r) for r in recorded]),
    }


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of two equally long series; None when either is constant or too short."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)
