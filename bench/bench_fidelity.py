"""Fidelity: how closely real Gatling injectors follow the planned arrival curve.

A 60 s viral-x10 shape peaking at 2,000 users/s, split over 2 local injectors
(one per region label), against the bundled sample target on loopback with
room for the load. Prints the MAPE of achieved vs planned per-second arrivals
(target: <= 2%) and the achieved/planned request ratio.

    .venv/bin/python bench/bench_fidelity.py [--peak 2000] [--duration-scale 1]
"""

from __future__ import annotations

import argparse
import time

from common import roomy_target, write_bench_profile

from loadorch.orchestrator import RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.local import LocalProvider

VIRAL_X10_60S = """\
  kind: viral
  warmup_s: 10
  growth: logistic
  growth_s: 15
  multiplier: 10
  hold_s: 20
  decay_s: 10
  cooldown_s: 5
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peak", type=float, default=2000.0)
    args = parser.parse_args()
    path = write_bench_profile(
        "bench-fidelity", VIRAL_X10_60S, baseline=args.peak / 10, per_injector_rate=args.peak / 2
    )
    work = path.parent
    target = roomy_target()
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
