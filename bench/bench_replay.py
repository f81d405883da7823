"""Benchmark: `spike replay import` pieces — log parsing/counting and curve compaction.

1. Writes a 10-million-line nginx combined log (one day, diurnal traffic, a few spikes, some
   paths with ids and query strings) into a temporary directory.
2. In a fresh Python process (so that its peak RSS is its own, via resource.getrusage):
   read_hits + per_second_counts over the whole log; lines/s and peak RSS. A second fresh
   process does the same while also building the request mix from the same stream.
3. Compacts a synthetic 24-hour per-second curve (86,400 points: diurnal shape, Poisson-like
   noise, three spikes) and reports segments, seconds and fit errors.

Targets: >= 500,000 lines/s and <= 500 MB peak RSS for parsing and counting; <= 500 segments
within 1% total / 2% per minute, in a few seconds.

Usage: ``python3 bench/bench_replay.py [--lines 10000000] [--keep DIR]``; JSON in bench/out/replay.json.
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadorch.replay.compact import compact_curve, fit_report  # noqa: E402
from loadorch.replay.mix import build_mix  # noqa: E402
from loadorch.replay.sources import ReadStats, SecondCounts, per_second_counts, read_hits  # noqa: E402

TARGET_LINES_PER_S = 500_000
TARGET_RSS_MB = 500.0
TARGET_SEGMENTS = 500
DAY_S = 86_400
SPIKES = ((30_000, 600, 4.0), (50_000, 300, 8.0), (70_000, 1200, 2.5))


def shape(t: int) -> float:
    """Relative traffic at second t of the day: diurnal between 0.2 and 2.0, with spikes on top."""
    rate = 0.2 + 0.9 * (1 - math.cos(2 * math.pi * t / DAY_S))
    for start, length, extra in SPIKES:
        if start <= t < start + length:
            rate += extra * min(1.0, (t - start) / 30)
    return rate


def write_log(path: Path, lines: int) -> None:
    rng = random.Random(1)
    weights = [shape(t) for t in range(DAY_S)]
    scale = lines / sum(weights)
    day0 = calendar.timegm((2026, 10, 10, 0, 0, 0, 0, 0, 0))
    months = "Oct"
    written = 0
    paths = [
        "/feed?page=1",
        "/feed?page=2",
        "/posts/{}",
        "/users/{}/posts",
        "/static/app.js",
        "/search?q=shoes",
    ]
    with open(path, "w", buffering=1 << 22) as out:
        carry = 0.0
        for t in range(DAY_S):
            want = weights[t] * scale + carry
            n = int(want)
            carry = want - n
            if written + n > lines or t == DAY_S - 1:
                n = lines - written
            if n <= 0:
                continue
            moment = time.gmtime(day0 + t)
            stamp = f"{moment.tm_mday:02d}/{months}/{moment.tm_year}:{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000"
            chunk = []
            for _ in range(n):
                template = paths[rng.randrange(6)]
                chunk.append(
                    f'10.1.{rng.randrange(256)}.7 - - [{stamp}] "GET {template.format(rng.randrange(5000))} HTTP/1.1" '
                    f'200 {rng.randrange(100, 9000)} "-" "Mozilla/5.0 (X11; Linux x86_64)"\n'
                )
            out.write("".join(chunk))
            written += n


def parse_child(path: Path) -> None:
    t0 = time.perf_counter()
    stats = ReadStats()
    hits = read_hits(path, stats=stats)
    counts = per_second_counts(hits)
    total, seconds = counts.total, len(counts)
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds_elapsed": elapsed,
                "lines": stats.lines,
                "parsed": stats.parsed,
                "malformed": stats.malformed,
                "lines_per_s": stats.lines / elapsed,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "counted": total,
                "count_seconds": seconds,
            }
        )
    )


def mix_child(path: Path) -> None:
    """Counting and the mix in one pass over the stream (what `replay import` does)."""
    t0 = time.perf_counter()
    stats = ReadStats()
    by_second: dict[int, int] = {}

    def counted():  # type: ignore[no-untyped-def]
        get = by_second.get
        for hit in read_hits(path, stats=stats):
            second = hit[0] // 1000
            by_second[second] = get(second, 0) + 1
            yield hit

    mix = build_mix(counted())
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds_elapsed": elapsed,
                "lines": stats.lines,
                "lines_per_s": stats.lines / elapsed,
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "templates": [(t.method, t.path_template, round(t.weight, 4)) for t in mix.templates],
                "feeders": {name: len(values) for name, values in mix.feeders.items()},
            }
        )
    )


def synthetic_day(seed: int = 7, peak_scale: float = 1000.0) -> SecondCounts:
    rng = random.Random(seed)
    values = array("q")
    for t in range(DAY_S):
        lam = shape(t) * peak_scale
        values.append(max(0, round(rng.gauss(lam, math.sqrt(lam)))))
    return SecondCounts(0, values)


def run_child(flag: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, flag, "--log", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"child {flag} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="write (or reuse) the log in this directory")
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-count", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-mix", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_count:
        parse_child(args.log)
        return 0
    if args.child_mix:
        mix_child(args.log)
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="spike-replay-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"access-{args.lines}.log"
    try:
        if not log.is_file():
            t0 = time.perf_counter()
            write_log(log, args.lines)
            print(
                f"wrote {args.lines:,} lines ({log.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s"
            )
        counting = run_child("--child-count", log)
        print(
            f"parse+count: {counting['lines']:,} lines in {counting['seconds_elapsed']:.1f} s = "
            f"{counting['lines_per_s']:,.0f} lines/s, peak RSS {counting['rss_mb']:.0f} MB, "
            f"{counting['count_seconds']} seconds, malformed {counting['malformed']}"
        )
        mixing = run_child("--child-mix", log)
        print(
            f"parse+count+mix: {mixing['lines_per_s']:,.0f} lines/s, peak RSS {mixing['rss_mb']:.0f} MB, "
            f"{len(mixing['templates'])} templates, feeders {mixing['feeders']}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    counts = synthetic_day()
    t0 = time.perf_counter()
    curve = compact_curve(counts)
    compact_s = time.perf_counter() - t0
    report = fit_report(counts, curve)
    print(
        f"compaction: 86,400 s -> {report['segments']} segments in {compact_s:.2f} s; total error "
        f"{report['total_error']:.2e}, worst minute error {report['worst_minute_error']:.4f}, "
        f"MAPE {report['mape_pct_over_active_seconds']:.2f}%, r={report['correlation']:.5f}"
    )
    results = {
        "parse_count": counting,
        "parse_count_mix": mixing,
        "compaction": {"seconds_elapsed": compact_s, **report},
        "targets": {
            "lines_per_s": TARGET_LINES_PER_S,
            "rss_mb": TARGET_RSS_MB,
            "segments": TARGET_SEGMENTS,
        },
    }
    ok = (
        counting["lines_per_s"] >= TARGET_LINES_PER_S
        and counting["rss_mb"] <= TARGET_RSS_MB
        and int(report["segments"] or 0) <= TARGET_SEGMENTS
        and float(report["worst_minute_error"] or 0) <= 0.02
    )
    results["passed"] = ok
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print("PASS" if ok else "FAIL", "->", out / "replay.json")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
