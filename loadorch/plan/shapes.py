"""Load shapes compile to one rate curve (pure)."""

from __future__ import annotations

import math

from loadorch.curve import RateCurve
from loadorch.profiles.model import Profile, ReplayShape, StepsShape, ViralShape

# Growth curves are sampled on whole seconds (Gatling injects whole-second
# segments) and at most this many pieces per phase, which keeps the rendered
# injection compact while staying within ~1% of the smooth curve.
MAX_PIECES_PER_PHASE = 40
LOGISTIC_STEEPNESS = 10.0


def profile_curve(profile: Profile) -> RateCurve:
    """The whole run's arrival-rate curve, summed over all regions."""
    shape = profile.shape
    if isinstance(shape, ViralShape):
        return viral_curve(shape, profile.baseline_rate_per_s)
    if isinstance(shape, StepsShape):
        return steps_curve(shape)
    if isinstance(shape, ReplayShape):
        return replay_curve(shape)
    raise TypeError(f"unknown shape {type(shape).__name__}")  # pragma: no cover


def viral_curve(shape: ViralShape, baseline: float) -> RateCurve:
    peak = baseline * shape.multiplier
    points: list[tuple[float, float]] = [(0, baseline)]
    t = float(shape.warmup_s)
    if t > 0:
        points.append((t, baseline))
    for x in _sample_times(shape.growth_s)[1:]:
        points.append((t + x, _grow(shape.growth, baseline, peak, x / shape.growth_s)))
    t += shape.growth_s
    if shape.hold_s:
        t += shape.hold_s
        points.append((t, peak))
    for x in _sample_times(shape.decay_s)[1:]:
        points.append((t + x, _grow(shape.growth, baseline, peak, 1 - x / shape.decay_s)))
    t += shape.decay_s
    if shape.cooldown_s:
        t += shape.cooldown_s
        points.append((t, baseline))
    return RateCurve.from_points(points).simplified()


def steps_curve(shape: StepsShape) -> RateCurve:
    points: list[tuple[float, float]] = []
    t = 0.0
    for i, step in enumerate(shape.steps):
        if i == 0:
            points.append((0, 0.0 if step.ramp else step.rate_per_s))
        elif not step.ramp:
            points.append((t, step.rate_per_s))  # a jump at t
        t += step.duration_s
        points.append((t, step.rate_per_s))
    return RateCurve.from_points(points).simplified()


def replay_curve(shape: ReplayShape) -> RateCurve:
    """The recorded curve, time compressed by `speedup` (rates up by as much) and scaled by `scale`.

    Breakpoints land on whole seconds, as Gatling injects whole-second segments; points that
    round onto one second keep the first and the last (a jump).
    """
    factor = shape.scale * shape.speedup
    rounded: list[tuple[float, float]] = []
    for t, rate in shape.points:
        point = (float(round(t / shape.speedup)), rate * factor)
        if len(rounded) >= 2 and rounded[-1][0] == rounded[-2][0] == point[0]:
            rounded[-1] = point  # three on one second: the middle one goes
        else:
            rounded.append(point)
    return RateCurve.from_points(rounded).simplified()


def phases(profile: Profile) -> list[tuple[str, int]]:
    """The storm's phases as (name, start second): warmup, growth, hold, decay, cooldown, or each step."""
    shape = profile.shape
    if isinstance(shape, ReplayShape):
        return [(f"replay of a recorded spike (x{shape.scale:g}, {shape.speedup:g}x speed)", 0)]
    if isinstance(shape, StepsShape):
        out, t = [], 0
        for i, step in enumerate(shape.steps):
            out.append((f"step {i + 1}: {'ramp to' if step.ramp else 'hold'} {step.rate_per_s:g} users/s", t))
            t += step.duration_s
        return out
    parts = [
        ("warmup", shape.warmup_s),
        (f"{shape.growth} growth to x{shape.multiplier:g}", shape.growth_s),
        ("hold at peak", shape.hold_s),
        ("decay", shape.decay_s),
        ("cooldown", shape.cooldown_s),
    ]
    out, t = [], 0
    for name, duration in parts:
        if duration:
            out.append((name, t))
            t += duration
    return out


def _sample_times(duration_s: int) -> list[int]:
    if duration_s <= 0:
        return [0]
    step = max(1, math.ceil(duration_s / MAX_PIECES_PER_PHASE))
    times = list(range(0, duration_s, step))
    return [*times, duration_s]


def _grow(kind: str, low: float, high: float, progress: float) -> float:
    """Rate at `progress` (0..1) of a growth from `low` to `high`."""
    if kind == "linear":
        return low + (high - low) * progress
    if kind == "exponential":
        return low * (high / low) ** progress

    # logistic, normalised so that it starts exactly at low and ends at high
    def f(x: float) -> float:
        return 1 / (1 + math.exp(-LOGISTIC_STEEPNESS * (x - 0.5)))

    return low + (high - low) * (f(progress) - f(0)) / (f(1) - f(0))
