"""Analysis of Gatling simulation logs: exact, mergeable statistics of a distributed run.

`simlog` parses each injector's simulation.log into small histograms
(:class:`LogAccumulator`, streaming) and merges them (:func:`merge`,
:func:`analyze_logs`); `stats` holds the percentile maths and the result
types (:class:`MergedStats`).
"""

from loadorch.analysis.simlog import InjectorLog, LogAccumulator, analyze_logs, merge
from loadorch.analysis.stats import (
    ErrorCount,
    InjectorSummary,
    Latency,
    LatencyStats,
    MergedStats,
    RegionSecond,
    SecondStats,
    percentile,
    percentiles,
)

__all__ = [
    "ErrorCount",
    "InjectorLog",
    "InjectorSummary",
    "Latency",
    "LatencyStats",
    "LogAccumulator",
    "MergedStats",
    "RegionSecond",
    "SecondStats",
    "analyze_logs",
    "merge",
    "percentile",
    "percentiles",
]
