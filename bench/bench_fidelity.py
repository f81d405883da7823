"""Fidelity: how closely real Gatling injectors follow the planned arrival curve.

A 60 s viral-x10 shape peaking at 2,000 users/s, split over 2 local injectors
(one per region label), against the bundled sample target on loopback with
room for the load. Prints the MAPE of achieved vs planned per-second arrivals
(target: <= 2%) and the achieved/planned request ratio.

    .venv/bin/python bench/bench_fidelity.py [--peak 2000] [--duration-scale 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from loadorch.orchestrator import RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.local import LocalProvider
from loadorch.target.server import TargetConfig, TargetServer

REPO = Path(__file__).resolve().parents[1]

PROFILE = """\
name: bench-fidelity
description: 60 s viral x10 peaking at {peak} users/s
target:
  base_url: http://127.0.0.1:1
baseline_rate_per_s: {baseline}
shape:
  kind: viral
  warmup_s: 10
  growth: logistic
  growth_s: 15
  multiplier: 10
  hold_s: 20
  decay_s: 10
  cooldown_s: 5
scenario:
  requests:
    - {{name: read_feed, path: "/feed?page=1", weight: 3}}
    - {{name: read_post, path: "/posts/{{post_id}}", weight: 1}}
  feeders:
    - {{name: posts, file: posts.csv}}
regions:
  - {{name: eu-west-2}}
  - {{name: us-east-1}}
injector:
  max_rate_per_s: {capacity}
  heap_mb: 1024
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peak", type=float, default=2000.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spike-bench-fidelity-"))
    shutil.copyfile(REPO / "loadorch/profiles/builtin/posts.csv", work / "posts.csv")
    path = work / "bench-fidelity.yaml"
    path.write_text(PROFILE.format(peak=args.peak, baseline=args.peak / 10, capacity=args.peak / 2))
    # Roomy target: the benchmark measures injection, not the target's limits.
    target = TargetServer(
        TargetConfig(port=0, capacity=100_000, service_time_ms=0, queue_timeout_ms=10_000)
    ).start()
    try:
        started = time.monotonic()
        outcome = execute_run(
            load_profile(path),
            provider=LocalProvider(),
            settings=RunSettings(runs_dir=work / "runs", cache_dir=build_cache_dir(), html_report="off"),
            target=target.url,
        )
        wall = time.monotonic() - started
    finally:
        target.stop()
    s = outcome.summary
    print(f"run dir: {outcome.run_dir}")
    print(f"target: bundled sample target ({target.stats()['requests']:,} requests served)")
    print(f"planned users: {outcome.plan.planned_users:,.0f}, achieved users: {s['users']['started']:,}")
    print(
        f"requests: {s['requests']['total']:,} (ko {s['requests']['ko']:,}); "
        f"achieved/planned {s['achieved_vs_planned_requests']}"
    )
    print(f"fidelity MAPE (seconds with plan >= 1 user/s): {s['fidelity_mape_pct']} %  (target <= 2 %)")
    print(f"per region MAPE: {s['fidelity_by_region_mape_pct']}")
    print(f"start offsets: {s['start_skew_ms']}")
    print(
        f"p50/p95/p99: {s['latency']['all']['p50']}/{s['latency']['all']['p95']}/{s['latency']['all']['p99']} ms"
    )
    worst = sorted(s["per_second"], key=lambda r: -abs(r["achieved_users"] - r["planned_users"]))[:5]
    print("worst seconds:", [(r["second"], r["planned_users"], r["achieved_users"]) for r in worst])
    print(f"wall time: {wall:.1f} s, verdict {s['verdict']}")


if __name__ == "__main__":
    main()
