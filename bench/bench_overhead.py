"""spike's own overhead around a real run, measured from outside with `spike run`.

1. start: `spike run` launched -> the first request of the run (warm build
   cache; target: <= 6 s).
2. finish: the last request of the run ends -> `spike run` exits, having
   collected every log, merged the exact statistics, built Gatling's merged
   HTML report and written summary.json (target: <= 10 s for 1 million requests).

The run is real: 2 local Gatling injectors against the bundled sample target,
`--users-per-s` arrivals per second for `--duration` seconds, each user making
`--requests-per-user` requests on one keep-alive connection.

    .venv/bin/python bench/bench_overhead.py                       # 1,000,000 requests
    .venv/bin/python bench/bench_overhead.py --duration 10 --users-per-s 50   # quick start-time check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import roomy_target, write_bench_profile

SPIKE = Path(sys.executable).with_name("spike")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=100)
    parser.add_argument("--users-per-s", type=float, default=1000)
    parser.add_argument("--requests-per-user", type=int, default=10)
    parser.add_argument("--html-report", default="wait", choices=("wait", "background", "off"))
    args = parser.parse_args()
    profile = write_bench_profile(
        "bench-overhead",
        f"  kind: steps\n  steps:\n    - {{duration_s: {args.duration}, rate_per_s: {args.users_per_s}}}\n",
        baseline=args.users_per_s,
        per_injector_rate=args.users_per_s / 2,
        requests_per_user=args.requests_per_user,
    )
    work = profile.parent
    # warm the build cache first: the target figure is for a warm cache
    subprocess.run([str(SPIKE), "build", "--profile", str(profile)], check=True, capture_output=True)
    target = roomy_target()
    try:
        launched_ms = time.time() * 1000
        proc = subprocess.run(
            [
                str(SPIKE),
                "run",
                "--profile",
                str(profile),
                "--target",
                target.url,
                "--runs-dir",
                str(work / "runs"),
                "--html-report",
                args.html_report,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        exited_ms = time.time() * 1000
    finally:
        target.stop()
    if proc.returncode not in (0, 1):
        sys.exit(f"spike run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(next((work / "runs").glob("*/summary.json")).read_text())
    stats_first = summary["start_at_ms"] + summary["start_skew_ms"]["first_request_offset_min"]
    last_end = max(i["last_request_end_ms"] for i in summary["injectors"] if i.get("last_request_end_ms"))
    print(f"run dir: {summary['run_dir']}")
    print(
        f"requests: {summary['requests']['total']:,} (planned {summary['planned_requests']:,.0f}), "
        f"report: {summary['report_state']}"
    )
    print(f"spike run launched -> first request: {(stats_first - launched_ms) / 1000:.2f} s  (target <= 6 s)")
    print(
        f"last request ended -> spike run exited: {(exited_ms - last_end) / 1000:.2f} s  (target <= 10 s), "
        f"--html-report {args.html_report}"
    )
    print(
        f"  of which: collect -> verdict and summary.json written {summary['judged_after_s']:.2f} s; "
        f"collect -> Gatling HTML report written {summary.get('report_after_s', 'n/a')} s"
    )


if __name__ == "__main__":
    main()
