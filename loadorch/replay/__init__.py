"""Replay of a recorded spike: recordings -> per-second counts -> a compact curve and a request mix.

`sources` streams recordings (access logs, CSV, an earlier run, InfluxDB) as Hits and counts
them per second; `compact` fits a RateCurve with few segments to the counts within stated
error bounds; `mix` turns the Hits' paths into request templates, weights and feeders.
"""

from loadorch.replay.compact import compact_curve, fit_report, transform
from loadorch.replay.mix import RequestMix, TemplateShare, build_mix
from loadorch.replay.sources import (
    Hit,
    ReadStats,
    SecondCounts,
    detect_format,
    influx_series,
    per_second_counts,
    read_hits,
)

__all__ = [
    "Hit",
    "ReadStats",
    "RequestMix",
    "SecondCounts",
    "TemplateShare",
    "build_mix",
    "compact_curve",
    "detect_format",
    "fit_report",
    "influx_series",
    "per_second_counts",
    "read_hits",
    "transform",
]
