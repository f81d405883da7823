"""Compare spike's exact statistics with a Gatling 3.11.5 report's js/stats.json.

Counts, min, max, mean and standard deviation must agree exactly. Gatling's
percentiles come from a t-digest (approximate, randomized) while spike's are
exact nearest-rank, so each Gatling percentile must lie in the exact
distribution's band around q: from the nearest-rank sample at q-1 to the one
at q+1, widened by one neighbouring sample on each side, because the t-digest
interpolates between adjacent centroids (single samples, when there are few).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from loadorch.analysis import Latency
from loadorch.analysis.stats import Status

PERCENTILE_FIELDS = {"percentiles1": 50, "percentiles2": 75, "percentiles3": 95, "percentiles4": 99}
STATUSES: dict[str, Status] = {"total": "all", "ok": "ok", "ko": "ko"}


def gatling_requests(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every REQUEST entry of stats.json by its path, however deep in groups."""
    found: dict[str, dict[str, Any]] = {}
    for child in node.get("contents", {}).values():
        if child["type"] == "REQUEST":
            found[child["path"]] = child["stats"]
        found.update(gatling_requests(child))
    return found


def sorted_samples(latency: Latency, status: Status) -> list[int]:
    hist = latency.histogram(status)
    return [value for value in sorted(hist) for _ in range(hist[value])]


def tdigest_band(samples: list[int], q: int) -> tuple[int, int]:
    """[sample at nearest rank of q-1, minus one sample; sample at nearest rank of q+1, plus one]."""
    n = len(samples)
    low = max(1, math.ceil(Fraction(max(q - 1, 0)) * n / 100))
    high = max(1, math.ceil(Fraction(min(q + 1, 100)) * n / 100))
    return samples[max(low - 2, 0)], samples[min(high, n - 1)]


def compare(scope: str, gatling: dict[str, Any], latency: Latency) -> list[str]:
    """Every disagreement between a Gatling stats block and spike's latency of the same scope."""
    problems = []
    for g_status, status in STATUSES.items():
        mine = getattr(latency, status)
        count = gatling["numberOfRequests"][g_status]
        if int(count) != mine.count:
            problems.append(f"{scope} {status}: count gatling {count} spike {mine.count}")
        if mine.count == 0:
            continue  # Gatling prints 0 or "-" for the statistics of nothing
        exact = {
            "minResponseTime": mine.min,
            "maxResponseTime": mine.max,
            "meanResponseTime": mine.mean,
            "standardDeviation": mine.std_dev,
        }
        for name, value in exact.items():
            if int(gatling[name][g_status]) != value:
                problems.append(f"{scope} {status}: {name} gatling {gatling[name][g_status]} spike {value}")
        samples = sorted_samples(latency, status)
        for name, q in PERCENTILE_FIELDS.items():
            theirs = int(gatling[name][g_status])
            low, high = tdigest_band(samples, q)
            if not low <= theirs <= high:
                problems.append(
                    f"{scope} {status}: p{q} gatling {theirs} outside [{low}, {high}] "
                    f"(spike's exact p{q} is {latency.percentile(q, status)})"
                )
    return problems
