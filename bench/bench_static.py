"""Benchmark: whole `--provider static` runs on 1 and on N loopback SSH hosts.

For each fleet size, N real sshd hosts (127.0.0.2, ...; tests/integration/sshd.py) become the
injectors of one region and a short constant-rate profile runs on them, twice: a cold run (empty
host caches: Gatling's jars travel) and a warm run (nothing is pushed again). Reported per run:

- deploy_s: provision (connect, pin host keys) + push of every artifact;
- launch_s: the agents and Gatling started on every host (detached, over SSH);
- boot_s: until every injector waited for the go signal (JVM start; CPU-bound here, where all
  "hosts" share this machine's CPUs);
- start skew, three ways (every injector has the same shard, so all should start together):
  release_spread_ms, when the injectors' start gates opened (what spike controls: the go signal,
  each injector's clock offset compensated); first_user_spread_ms, when Gatling created each
  injector's first user (adds Gatling's own start-up after the gate, ~150 ms, on CPUs that all
  "hosts" here share); first_request_spread_ms; and the measured clock offsets.

Targets (the issue): push and start on 10 hosts at most 2x the time for 1; start skew at most
50 ms on loopback hosts.

Usage: ``python3 bench/bench_static.py [--hosts 1,10] [--duration 10]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

from common import roomy_target, write_bench_profile  # noqa: E402
from sshd import start_hosts  # noqa: E402

from loadorch.orchestrator import RunSettings, execute_run  # noqa: E402
from loadorch.paths import build_cache_dir  # noqa: E402
from loadorch.profiles.loader import load_profile  # noqa: E402
from loadorch.providers.static import StaticProvider  # noqa: E402
from loadorch.transport.hostkeys import generate_client_key  # noqa: E402


class Stopwatch:
    """Phase times of one run."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.at: dict[str, float] = {}

    def phase(self, name: str, detail: str = "") -> None:
        self.at.setdefault(name, time.monotonic() - self.t0)

    def tick(self, view: Any) -> None:
        return None


def one_run(work: Path, inventory: Path, n: int, duration: int, target_url: str) -> dict[str, Any]:
    shape = f"  kind: steps\n  steps:\n    - {{duration_s: {duration}, rate_per_s: {10 * n}}}\n"
    profile = write_bench_profile("static-bench", shape, baseline=10 * n, per_injector_rate=10)
    text = profile.read_text().replace(
        "  - {name: eu-west-2}\n  - {name: us-east-1}\n", "  - {name: eu-west-2}\n"
    )
    profile.write_text(text.replace("heap_mb: 1024", "heap_mb: 256"))
    watch = Stopwatch()
    outcome = execute_run(
        load_profile(profile),
        provider=StaticProvider(inventory, cache_dir=build_cache_dir()),
        settings=RunSettings(runs_dir=work / "runs", cache_dir=build_cache_dir(), html_report="off"),
        target=target_url,
        observer=watch,
    )
    summary = outcome.summary
    offsets = [
        i["first_request_offset_ms"]
        for i in summary["injectors"]
        if i.get("first_request_offset_ms") is not None
    ]
    return {
        "verdict": summary["verdict"],
        "injectors": len(summary["injectors"]),
        "deploy_s": round(watch.at["deploy"] - watch.at["plan"], 3),
        "launch_s": round(watch.at["launch"] - watch.at["deploy"], 3),
        "boot_s": round(watch.at["go"] - watch.at["launch"], 3),
        "pushed": {k: len(v) for k, v in summary["teardown"]["deploy"]["pushed"].items()},
        "clock_skew_ms": summary.get("clock", {}).get("skew_ms"),
        "release_spread_ms": summary["start_skew_ms"]["release_spread"],
        "first_user_spread_ms": _first_user_spread(outcome),
        "first_request_spread_ms": max(offsets) - min(offsets) if offsets else None,
        "ready_margin_min_ms": min(i["ready_margin_ms"] for i in summary["injectors"]),
    }


def _first_user_spread(outcome: Any) -> int | None:
    """The spread of every injector's first user start (USER START record) around the shared start."""
    firsts = []
    for injector in outcome.summary["injectors"]:
        log = next((outcome.run_dir / "injectors" / injector["id"] / "results").glob("*/simulation.log"))
        with log.open() as handle:
            for line in handle:
                fields = line.split("\t")
                if fields[0] == "USER" and fields[3].strip().isdigit():
                    firsts.append(int(fields[3].strip()))
                    break
    return max(firsts) - min(firsts) if firsts else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", default="1,10")
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    target = roomy_target()
    try:
        for n in [int(x) for x in args.hosts.split(",")]:
            work = Path(tempfile.mkdtemp(prefix=f"spike-static-bench-{n}-"))
            key = work / "client_ed25519"
            hosts = start_hosts(work / "hosts", n, generate_client_key(key))
            try:
                lines = ["defaults:", f"  key: {key}", "hosts:"]
                for i, host in enumerate(hosts):
                    lines += [
                        f"  - host: {host.address}",
                        f"    port: {host.port}",
                        "    region: eu-west-2",
                        f"    host_key: {host.host_fingerprint}",
                        f"    base_dir: {work / f'remote{i}'}",
                    ]
                inventory = work / "hosts.yaml"
                inventory.write_text("\n".join(lines) + "\n")
                cold = one_run(work, inventory, n, args.duration, target.url)
                warm = one_run(work, inventory, n, args.duration, target.url)
                results[str(n)] = {"cold": cold, "warm": warm}
                print(f"{n} host(s): cold {cold}\n{n} host(s): warm {warm}", flush=True)
            finally:
                for host in hosts:
                    host.stop()
    finally:
        target.stop()
    sizes = sorted(results, key=int)
    if len(sizes) >= 2:
        small, big = results[sizes[0]], results[sizes[-1]]
        for kind in ("cold", "warm"):
            one = small[kind]["deploy_s"] + small[kind]["launch_s"]
            many = big[kind]["deploy_s"] + big[kind]["launch_s"]
            results[f"ratio_{kind}_push_and_start"] = round(many / one, 2)
            print(
                f"{kind}: push+start {one:.2f} s on {sizes[0]} vs {many:.2f} s on {sizes[-1]}: x{many / one:.2f}"
            )
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "static.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
