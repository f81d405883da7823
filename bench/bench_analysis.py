"""Benchmark: spike's simulation.log analysis against Gatling 3.11.5's own reports-only run.

1. Generates (once) 5 million REQUEST records over 4 injector logs with
   bench/gen_simlog.py, in Gatling 3.11.5's exact format.
2. Runs `analyze_logs` in a fresh Python process (so its peak RSS, and that
   of its worker processes, is measured alone with resource.getrusage) and
   times it.
3. Runs Gatling's reports-only mode over the same logs (`-ro`, every log in
   one folder) and times it.
4. Checks that both agree: counts, min, max, mean and standard deviation
   exactly; each Gatling percentile within the exact distribution's t-digest
   band (nearest-rank samples at q-1 and q+1, widened by one neighbouring
   sample); and prints lines/s, seconds, RSS and the speed-up.

Targets: <= 10 s and <= 300 MB for the analysis, >= 3x faster than Gatling.

Usage: ``python3 bench/bench_analysis.py [--dir bench/out/5m] [--requests 5000000] [--workers N]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadorch.analysis import InjectorLog, Latency, analyze_logs  # noqa: E402
from loadorch.analysis.stats import Status  # noqa: E402
from loadorch.engine.gatling.command import reports_only_command  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 300.0
TARGET_SPEEDUP = 3.0
PERCENTILE_FIELDS = {"percentiles1": 50, "percentiles2": 75, "percentiles3": 95, "percentiles4": 99}
STATUSES: dict[str, Status] = {"total": "all", "ok": "ok", "ko": "ko"}


def load_logs(directory: Path) -> tuple[list[InjectorLog], int]:
    meta = json.loads((directory / "meta.json").read_text())
    logs = [
        InjectorLog(injector, region, directory / injector / "simulation.log")
        for injector, region in sorted(meta["injectors"].items())
    ]
    return logs, int(meta["start_at_ms"])


def analyze_child(directory: Path, workers: int | None, histograms_out: Path) -> None:
    """Runs in its own process: analyze, then print timings, peak RSS and the numbers as JSON."""
    logs, start_at_ms = load_logs(directory)
    t0 = time.perf_counter()
    stats = analyze_logs(logs, start_at_ms, workers=workers)
    summary = stats.to_dict()
    seconds = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    scopes = {"global": stats.latency, **{f"request:{k}": v for k, v in stats.by_request.items()}}
    histograms_out.write_text(
        json.dumps(
            {
                name: {"ok": sorted(latency.ok_hist.items()), "ko": sorted(latency.ko_hist.items())}
                for name, latency in scopes.items()
            }
        )
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_self_mb": own,
                "rss_max_child_mb": children,
                "lines": stats.lines_read,
                "requests": stats.requests,
                "files": stats.files_read,
                "malformed": stats.malformed_lines,
                "workers": workers,
                "latency": summary["latency"],
            }
        )
    )


def gatling_classpath() -> str:
    path = REPO / "gatling" / "target" / "classpath.txt"
    if not path.is_file():
        print("building gatling/target/classpath.txt with Maven ...", flush=True)
        subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(REPO / "gatling" / "pom.xml"),
                "test-compile",
                "dependency:build-classpath",
            ],
            check=True,
        )
    return path.read_text().strip()


def run_gatling(logs: list[InjectorLog], work: Path) -> tuple[float, dict[str, Any]]:
    """Gatling's reports-only run over all logs in one folder: (wall seconds, stats.json)."""
    results = work / "gatling-results"
    shutil.rmtree(results, ignore_errors=True)
    folder = results / "merged"
    folder.mkdir(parents=True)
    for log in logs:
        target = folder / f"{log.injector_id}.log"
        try:
            os.link(log.path, target)
        except OSError:
            shutil.copyfile(log.path, target)
    command = reports_only_command(gatling_classpath(), results, "merged", heap_mb=2048)
    t0 = time.perf_counter()
    done = subprocess.run(command.argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 2):  # 2: the simulation's assertions failed, the report is written
        sys.exit(f"gatling failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, json.loads((folder / "js" / "stats.json").read_text())


def band(samples: list[tuple[int, int]], q: int) -> tuple[int, int]:
    """t-digest tolerance band from a sorted histogram [(value, count)]."""
    n = sum(c for _, c in samples)
    low = max(1, math.ceil(Fraction(max(q - 1, 0)) * n / 100)) - 1
    high = max(1, math.ceil(Fraction(min(q + 1, 100)) * n / 100)) + 1

    def at(rank: int) -> int:
        rank = min(max(rank, 1), n)
        seen = 0
        for value, count in samples:
            seen += count
            if seen >= rank:
                return value
        raise AssertionError("rank beyond the samples")

    return at(low), at(high)


def compare(gatling: dict[str, Any], histograms: dict[str, Any]) -> list[str]:
    blocks = {"global": gatling["stats"]}
    for child in gatling["contents"].values():
        if child["type"] == "REQUEST":
            blocks[f"request:{child['path']}"] = child["stats"]
    problems = []
    if set(blocks) != set(histograms):
        problems.append(f"scopes differ: gatling {sorted(blocks)} spike {sorted(histograms)}")
    for scope, block in sorted(blocks.items()):
        if scope not in histograms:
            continue
        latency = Latency(ok_hist=dict(histograms[scope]["ok"]), ko_hist=dict(histograms[scope]["ko"]))
        for g_status, status in STATUSES.items():
            mine = getattr(latency, status)
            if int(block["numberOfRequests"][g_status]) != mine.count:
                problems.append(
                    f"{scope} {status} count {block['numberOfRequests'][g_status]} != {mine.count}"
                )
            if mine.count == 0:
                continue
            for name, value in (
                ("minResponseTime", mine.min),
                ("maxResponseTime", mine.max),
                ("meanResponseTime", mine.mean),
                ("standardDeviation", mine.std_dev),
            ):
                if int(block[name][g_status]) != value:
                    problems.append(f"{scope} {status} {name} gatling {block[name][g_status]} spike {value}")
            samples = sorted(latency.histogram(status).items())
            for name, q in PERCENTILE_FIELDS.items():
                theirs = int(block[name][g_status])
                low, high = band(samples, q)
                if not low <= theirs <= high:
                    problems.append(f"{scope} {status} p{q} gatling {theirs} outside [{low}, {high}]")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out" / "5m")
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--injectors", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="analysis processes (default: one per CPU)")
    parser.add_argument("--skip-gatling", action="store_true", help="time spike only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    histograms_path = args.dir / "spike-histograms.json"
    if args.child:
        analyze_child(args.dir, args.workers, histograms_path)
        return 0

    meta_path = args.dir / "meta.json"
    if not meta_path.is_file() or json.loads(meta_path.read_text()).get("requests") != args.requests:
        subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "gen_simlog.py"),
                "--out",
                str(args.dir),
                "--requests",
                str(args.requests),
                "--injectors",
                str(args.injectors),
            ],
            check=True,
        )
    logs, _ = load_logs(args.dir)
    size_mb = sum(log.path.stat().st_size for log in logs) / 1e6
    print(f"logs: {len(logs)} files, {size_mb:.0f} MB, {os.cpu_count()} CPUs")

    child = [sys.executable, str(Path(__file__).resolve()), "--child", "--dir", str(args.dir)]
    if args.workers is not None:
        child += ["--workers", str(args.workers)]
    t0 = time.perf_counter()
    out = subprocess.run(child, capture_output=True, text=True, check=True)
    process_seconds = time.perf_counter() - t0
    spike = json.loads(out.stdout.strip().splitlines()[-1])
    rss_bound = spike["rss_self_mb"] + spike["rss_max_child_mb"] * min(len(logs), os.cpu_count() or 1)
    print(
        f"spike:   {spike['requests']:,} requests, {spike['lines']:,} lines in {spike['seconds']:.2f} s "
        f"({spike['lines'] / spike['seconds']:,.0f} lines/s; whole process {process_seconds:.2f} s)"
    )
    print(
        f"         peak RSS: analyzing process {spike['rss_self_mb']:.0f} MB, largest worker "
        f"{spike['rss_max_child_mb']:.0f} MB (all processes at once at most {rss_bound:.0f} MB)"
    )
    print(f"         global: {json.dumps(spike['latency']['all'], sort_keys=True)}")
    ok = spike["seconds"] <= TARGET_SECONDS and rss_bound <= TARGET_RSS_MB and spike["malformed"] == 0
    if args.skip_gatling:
        return 0 if ok else 1

    gatling_seconds, gatling = run_gatling(logs, args.dir)
    speedup = gatling_seconds / spike["seconds"]
    g = gatling["stats"]
    print(
        f"gatling: {g['numberOfRequests']['total']:,} requests in {gatling_seconds:.2f} s (reports-only, "
        f"-Xmx2g, whole JVM run); p50/p75/p95/p99 = "
        f"{', '.join(str(g[f]['total']) for f in PERCENTILE_FIELDS)}"
    )
    print(f"speed-up: {speedup:.1f}x (spike analysis vs Gatling reports-only)")
    problems = compare(gatling, json.loads(histograms_path.read_text()))
    if problems:
        print("DISAGREEMENTS:\n  " + "\n  ".join(problems))
    else:
        print(
            "agreement: counts, min, max, mean, stdDev equal; every Gatling percentile in its t-digest band"
        )
    ok = ok and speedup >= TARGET_SPEEDUP and not problems
    print(
        f"targets: <= {TARGET_SECONDS:.0f} s, <= {TARGET_RSS_MB:.0f} MB, >= {TARGET_SPEEDUP:.0f}x: "
        f"{'met' if ok else 'NOT MET'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
