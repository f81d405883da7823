"""`spike replay import`: a recording becomes an ordinary profile with a `replay` shape.

One streaming pass over the recording counts arrivals per second and builds the request mix;
the counts are compacted into a few piecewise-linear segments within the stated error bounds.
Written next to each other in the output folder:

    <name>.yaml            the profile (validated by loading it before the import reports success)
    <name>-curve.csv       the compact curve (t_s,rate_per_s) the profile plays
    <name>-recorded.csv    the recording itself (second,count): what a run's fidelity is judged against
    <name>-<column>.csv    one feeder per path placeholder, from the observed values

A recorded spike run (a run directory) keeps its own scenario: its requests, with the weights
the recording shows; logs get one request per path template (one request per arriving user).
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from loadorch.curve import RateCurve
from loadorch.errors import BadInputError
from loadorch.profiles.loader import load_profile
from loadorch.replay.compact import compact_curve, fit_report
from loadorch.replay.mix import QueryValues, RequestMix, build_mix
from loadorch.replay.sources import (
    Hit,
    ReadStats,
    SecondCounts,
    influx_series,
    read_hits,
    series_hits,
    spike_run_hits,
)

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class InfluxQuery:
    """A recording that lives in InfluxDB: a query returning one time series of request counts."""

    url: str
    query: str
    language: Literal["influxql", "flux"] = "influxql"
    database: str | None = None
    org: str | None = None
    values_are: Literal["count", "rate"] = "count"  # requests per interval, or per second

    @property
    def name(self) -> str:
        return f"an InfluxDB {self.language} query"


@dataclass(frozen=True)
class ImportOptions:
    name: str
    fmt: str | None = None  # None: detected from the content
    base_url: str = "http://127.0.0.1:8080"
    regions: tuple[str, ...] = ("local",)
    max_rate_per_s: float = 500.0  # per injector: sizes the fleet
    scale: float = 1.0
    speedup: float = 1.0
    peak_rate: float | None = None  # scale so that the replayed peak is this many users/s
    window: tuple[int | None, int | None] | None = None  # epoch ms [from, to)
    top_n: int = 20
    query_values: QueryValues = "placeholder"  # sensitive-looking values are dropped whatever this says
    max_total_error: float = 0.01
    max_minute_error: float = 0.02


@dataclass
class ImportResult:
    profile_path: Path
    curve: RateCurve
    counts: SecondCounts
    fit: dict[str, Any]
    stats: ReadStats
    mix: RequestMix | None
    scale: float
    files: list[Path] = field(default_factory=list)


def import_recording(source: Path | InfluxQuery, out_dir: Path, options: ImportOptions) -> ImportResult:
    """Read `source` (a log file, a CSV, a spike run directory or an InfluxDB query); write the profile."""
    if not NAME.match(options.name):
        raise BadInputError(
            f"profile name {options.name!r} is not valid",
            fix="use lowercase letters, digits and hyphens, e.g. --name black-friday-2025",
        )
    from loadorch.replay.sources import detect_format

    stats = ReadStats()
    by_second: dict[int, int] = {}
    mix: RequestMix | None
    if isinstance(source, InfluxQuery):
        fmt = f"influx-{source.language}"
        points = influx_series(
            source.url, source.query, language=source.language, database=source.database, org=source.org
        )
        stats.lines = stats.parsed = len(points)
        _drain(
            _count(
                series_hits(points, values_are=source.values_are, where=source.url), by_second, options.window
            )
        )
        mix = None
        scenario = _default_scenario()
    elif (fmt := options.fmt or detect_format(source)) == "spike-run":
        _drain(_count(spike_run_hits(source, kind="users", stats=stats), by_second, options.window))
        mix = None
        scenario = _spike_run_scenario(source, out_dir, options)
    else:
        mix = build_mix(
            _count(read_hits(source, fmt=fmt, stats=stats), by_second, options.window),
            top_n=options.top_n,
            query_values=options.query_values,
        )
        scenario = _mix_scenario(mix, out_dir, options.name) if mix.templates else _default_scenario()
    counts = _second_counts(by_second, options.window)
    curve = compact_curve(
        counts, max_total_error=options.max_total_error, max_minute_error=options.max_minute_error
    )
    fit = fit_report(counts, curve)
    scale = options.scale
    if options.peak_rate is not None:
        scale = options.peak_rate / (curve.peak_rate * options.speedup)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write(out_dir, options, curve, counts, scenario, scale, fmt, source, fit)
    loaded = load_profile(files[0])  # what was written is a valid profile, or the import fails here
    return ImportResult(loaded.source, curve, counts, fit, stats, mix, scale, files)


def _drain(hits: Iterable[Hit]) -> None:
    for _ in hits:
        pass


def _count(
    hits: Iterable[Hit], by_second: dict[int, int], window: tuple[int | None, int | None] | None
) -> Iterator[Hit]:
    """Pass the hits on, counting each second of the window on the way (one pass for both uses)."""
    low = -(1 << 62) if window is None or window[0] is None else window[0]
    high = 1 << 62 if window is None or window[1] is None else window[1]
    offset = 0 if window is None or window[0] is None else window[0]
    get = by_second.get
    for hit in hits:
        ts = hit[0]
        if low <= ts < high:
            second = (ts - offset) // 1000
            by_second[second] = get(second, 0) + hit[4]
            yield hit


def _second_counts(by_second: dict[int, int], window: tuple[int | None, int | None] | None) -> SecondCounts:
    if not by_second:
        raise BadInputError(
            "no requests were recorded" + (" in the window" if window else ""),
            fix="widen or move --window so that it covers recorded traffic",
        )
    anchored = window is not None and window[0] is not None
    first = 0 if anchored else min(by_second)
    last = max(by_second)
    counts = array("q", bytes(8 * (last - first + 1)))
    for second, count in by_second.items():
        counts[second - first] = count
    start_ms = window[0] if anchored and window is not None and window[0] is not None else first * 1000
    return SecondCounts(start_ms, counts)


def _mix_scenario(mix: RequestMix, out_dir: Path, name: str) -> dict[str, Any]:
    requests = []
    for template in mix.templates:
        ok = sorted(s for s in template.statuses if 200 <= s < 400) or [200]
        requests.append(
            {
                "name": template.name,
                "method": template.method,
                "path": template.path_template,
                "weight": round(template.weight, 6),
                "expect_status": ok,
            }
        )
    feeders = []
    for column in sorted(mix.feeders):
        file = out_dir / f"{name}-{column}.csv"
        out_dir.mkdir(parents=True, exist_ok=True)
        file.write_text(mix.feeder_csv(column))
        feeders.append({"name": column.replace("_", "-"), "file": file.name})
    return {"requests_per_user": 1, "requests": requests, "feeders": feeders}


def _default_scenario() -> dict[str, Any]:
    """A recording without paths (a CSV of counts, a metrics query): one GET / per arrival."""
    return {"requests_per_user": 1, "requests": [{"name": "recorded", "path": "/"}]}


def _spike_run_scenario(run_dir: Path, out_dir: Path, options: ImportOptions) -> dict[str, Any]:
    """The recorded run's own scenario, weighted as the run's requests actually were."""
    profile_file = run_dir / "profile.yaml"
    try:
        recorded = load_profile(profile_file).profile
    except (OSError, BadInputError) as exc:
        raise BadInputError(
            f"cannot read the recorded run's profile: {exc}", where=str(profile_file)
        ) from None
    seen: Counter[str] = Counter(hit[2] for hit in spike_run_hits(run_dir, kind="requests"))
    total = sum(seen.values()) or 1
    scenario = recorded.scenario.model_dump(mode="json", exclude_defaults=True)
    for request in scenario["requests"]:
        share = seen.get(f"/{request['name']}", 0) + seen.get(request["name"], 0)
        request["weight"] = round(share / total, 6) if share else 1e-6
    for feeder in scenario.get("feeders", []):
        src = (profile_file.parent / feeder["file"]).resolve()
        dest = out_dir / f"{options.name}-feeder-{Path(feeder['file']).name}"
        out_dir.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            dest.write_bytes(src.read_bytes())
        feeder["file"] = dest.name
    return scenario


def _write(
    out_dir: Path,
    options: ImportOptions,
    curve: RateCurve,
    counts: SecondCounts,
    scenario: dict[str, Any],
    scale: float,
    fmt: str,
    source: Path | InfluxQuery,
    fit: dict[str, Any],
) -> list[Path]:
    name = options.name
    curve_file = out_dir / f"{name}-curve.csv"
    curve_file.write_text("t_s,rate_per_s\n" + "".join(f"{t:g},{r:.6g}\n" for t, r in curve.points))
    recorded_file = out_dir / f"{name}-recorded.csv"
    with recorded_file.open("w") as handle:
        handle.write("second,count\n")
        handle.writelines(f"{i},{c}\n" for i, c in enumerate(counts.counts))
    positive = [r for _, r in curve.points if r > 0]
    profile = {
        "name": name,
        "description": (
            f"replay of {source.name} ({fmt}): {counts.total:,} arrivals over {len(counts.counts)} s, "
            f"{fit['segments']} segments, total error {fit['total_error']:.4f}, "
            f"worst minute {fit['worst_minute_error']:.4f}"
        ),
        "target": {"base_url": options.base_url},
        "baseline_rate_per_s": round(min(positive) if positive else 1.0, 6),
        "shape": {
            "kind": "replay",
            "curve_file": curve_file.name,
            "recorded_file": recorded_file.name,
            "scale": round(scale, 6),
            "speedup": options.speedup,
        },
        "scenario": scenario,
        "regions": [{"name": region} for region in options.regions],
        "injector": {"max_rate_per_s": options.max_rate_per_s},
    }
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False, width=110))
    return [path, curve_file, recorded_file]
