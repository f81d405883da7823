"""The rate curve: the one load model of spike.

A *curve* is a piecewise-linear arrival rate, in new users per second, over
time in seconds from the shared start. Every load shape (viral, steps, a
replayed recording) compiles to a curve; splitting a run across regions and
injectors divides curves; Gatling injects one `rampUsersPerSec(a).to(b)
.during(d)` per segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """One linear piece of a curve: rate goes from `start_rate` to `end_rate`."""

    start_s: float
    end_s: float
    start_rate: float
    end_rate: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def users(self) -> float:
        """Arrivals in this segment (the area under it)."""
        return (self.start_rate + self.end_rate) / 2 * self.duration_s


@dataclass(frozen=True)
class RateCurve:
    """A piecewise-linear arrival-rate curve through `points` (time_s, rate_per_s).

    Times start at 0 and never decrease; rates are >= 0. Between points the
    rate is linear. Two points at the same time are a jump (a step change),
    which carries no users; at the jump itself the later rate holds. Outside
    [0, duration] the rate is 0.
    """

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError("a rate curve needs at least two points")
        if self.points[0][0] != 0:
            raise ValueError(f"a rate curve starts at t=0, not t={self.points[0][0]}")
        for (t0, _), (t1, _) in zip(self.points, self.points[1:], strict=False):
            if t1 < t0:
                raise ValueError(f"curve times must not decrease ({t0} then {t1})")
        if self.duration_s <= 0:
            raise ValueError("a rate curve must last longer than 0 s")
        for t, rate in self.points:
            if rate < 0 or not math.isfinite(rate):
                raise ValueError(f"curve rate at t={t} must be a finite number >= 0, not {rate}")

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, float]]) -> RateCurve:
        return cls(tuple((float(t), float(r)) for t, r in points))

    @property
    def duration_s(self) -> float:
        return self.points[-1][0]

    @property
    def peak_rate(self) -> float:
        return max(rate for _, rate in self.points)

    @property
    def total_users(self) -> float:
        return sum(segment.users for segment in self.segments())

    def segments(self) -> Iterator[Segment]:
        """The linear pieces that last longer than 0 s (jumps are skipped)."""
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            if t1 > t0:
                yield Segment(t0, t1, r0, r1)

    def rate_at(self, t_s: float) -> float:
        if t_s < 0 or t_s > self.duration_s:
            return 0.0
        rate = 0.0
        for seg in self.segments():
            if seg.start_s <= t_s <= seg.end_s:
                rate = _interpolate(seg, t_s)
        return rate

    def users_between(self, a_s: float, b_s: float) -> float:
        """Arrivals between times a and b: the integral of the rate."""
        total = 0.0
        for seg in self.segments():
            lo, hi = max(a_s, seg.start_s), min(b_s, seg.end_s)
            if hi > lo:
                total += (_interpolate(seg, lo) + _interpolate(seg, hi)) / 2 * (hi - lo)
        return total

    def users_per_second(self) -> list[float]:
        """Planned arrivals in each whole second [i, i+1) of the curve."""
        return [self.users_between(i, i + 1) for i in range(math.ceil(self.duration_s))]

    def scaled(self, factor: float) -> RateCurve:
        if factor < 0:
            raise ValueError(f"scale factor must be >= 0, not {factor}")
        return RateCurve(tuple((t, r * factor) for t, r in self.points))

    def simplified(self) -> RateCurve:
        """Drop interior points that lie exactly on the line through their neighbours."""
        kept = [self.points[0]]
        for mid, nxt in zip(self.points[1:], self.points[2:], strict=False):
            prev = kept[-1]
            if mid[0] in (prev[0], nxt[0]):
                kept.append(mid)  # part of a jump
                continue
            slope_in = (mid[1] - prev[1]) / (mid[0] - prev[0])
            slope_out = (nxt[1] - mid[1]) / (nxt[0] - mid[0])
            if not math.isclose(slope_in, slope_out, rel_tol=1e-12, abs_tol=1e-12):
                kept.append(mid)
        kept.append(self.points[-1])
        return RateCurve(tuple(kept))

    def encode(self) -> str:
        """The compact `t:rate,t:rate` form passed to Gatling as a system property."""
        return ",".join(f"{_fmt(t)}:{_fmt(r)}" for t, r in self.points)


def _interpolate(seg: Segment, t_s: float) -> float:
    frac = (t_s - seg.start_s) / seg.duration_s
    return seg.start_rate + frac * (seg.end_rate - seg.start_rate)


def _fmt(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"
