"""Write synthetic Gatling 3.11.5 simulation.log files, in exactly the format Gatling writes.

Each injector gets ``<out>/<injector>/simulation.log`` with the ASSERTION and
RUN header records, then one block per virtual user of the `social`
scenario: ``USER START``, two ``REQUEST`` records (read_feed, read_post,
like_post, create_post drawn 50/30/15/5), ``USER END``. Arrivals follow a
viral spike (a base rate, a steep climb to 10x, a plateau, a decay);
latencies are log-normal with a slow tail and grow with the load; about 2% of
requests are KO with Gatling's real messages. ``<out>/meta.json`` records the
shared start and each injector's region.

Usage: ``python3 bench/gen_simlog.py --out bench/out/5m --requests 5000000 --injectors 4``
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ASSERTIONS = (
    "AAEDAAEFAAAAAAAAwFdAAQAAAAAAAMByQA==",
    "AAEDAAEFAAAAAAAAwFhAAQAAAAAAAACJQA==",
    "AAECAAMBAAAAAAAAAPA/",
)
REQUESTS = (("read_feed", 50.0), ("read_post", 80.0), ("like_post", 95.0), ("create_post", 100.0))
KO_MESSAGES = (
    ("status.find.in(200), but actually found 503", 0.55),
    ("status.find.in(200), but actually found 500", 0.80),
    ("status.find.in(200), but actually found 404", 0.92),
    ("i.n.c.ConnectTimeoutException: connection timed out after 10000 ms: 127.0.0.1/127.0.0.1:8080", 0.97),
    ("Request timeout to 127.0.0.1/127.0.0.1:8080 after 60000 ms", 1.0),
)
REGIONS = ("eu", "us", "ap", "sa")
USERS_REQUESTS = 2


def spike_shape(x: float) -> float:
    """Relative arrival rate at fraction `x` of the run: base 1, climb to 10, plateau, decay."""
    if x < 0.2:
        return 1.0
    if x < 0.3:
        return 1.0 + 9.0 * (x - 0.2) / 0.1
    if x < 0.6:
        return 10.0
    return 1.0 + 9.0 * math.exp(-(x - 0.6) * 8)


def write_injector(
    path: Path, injector: str, requests: int, start_at_ms: int, duration_s: int, seed: int
) -> tuple[str, int]:
    """Write one injector's log with about `requests` REQUEST records; returns (path, requests written)."""
    rng = random.Random(seed)
    users = max(1, requests // USERS_REQUESTS)
    # arrival times by inverting the cumulative spike shape on a fine grid
    steps = 2000
    weights = [spike_shape((i + 0.5) / steps) for i in range(steps)]
    total_weight = sum(weights)
    cumulative = []
    acc = 0.0
    for weight in weights:
        acc += weight
        cumulative.append(acc / total_weight)
    skew_ms = rng.randint(0, 40)
    run_start = start_at_ms + skew_ms
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        w = f.write
        for assertion in ASSERTIONS:
            w(f"ASSERTION\t{assertion}\n")
        w(f"RUN\tspike.SpikeSimulation\tspikesimulation\t{run_start}\t{injector}\t3.11.5\n")
        lines: list[str] = []
        step = 0
        random_ = rng.random
        lognorm = rng.lognormvariate
        for u in range(users):
            # u-th arrival: invert the cumulative curve (users are spread evenly over its area)
            target = (u + 0.5) / users
            while cumulative[step] < target:
                step += 1
            load = weights[step] / 10.0
            t = run_start + int((step + random_()) / steps * duration_s * 1000)
            lines.append(f"USER\tsocial\tSTART\t{t}\n")
            t += 1
            for k in range(USERS_REQUESTS):
                x = random_() * 100.0
                name = next(n for n, cum in REQUESTS if x < cum)
                if random_() < 0.01:
                    rt = int(200 + random_() * 2800)  # the slow tail
                else:
                    rt = int(lognorm(math.log(12 + 30 * load), 0.6))
                if random_() < 0.02 * (0.5 + load):
                    message = rng.random()
                    text = next(m for m, cum in KO_MESSAGES if message < cum)
                    lines.append(f"REQUEST\t\t{name}\t{t}\t{t + rt}\tKO\t{text}\n")
                else:
                    lines.append(f"REQUEST\t\t{name}\t{t}\t{t + rt}\tOK\t \n")
                written += 1
                t += rt
                if k < USERS_REQUESTS - 1:
                    t += 50 + int(random_() * 150)
            lines.append(f"USER\tsocial\tEND\t{t + 1}\n")
            if len(lines) >= 40000:
                w("".join(lines))
                lines.clear()
        w("".join(lines))
    return str(path), written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/5m"))
    parser.add_argument("--requests", type=int, default=5_000_000, help="REQUEST records in total")
    parser.add_argument("--injectors", type=int, default=4)
    parser.add_argument("--duration-s", type=int, default=600)
    parser.add_argument("--start-at-ms", type=int, default=1_795_000_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    injectors = [f"{REGIONS[i % len(REGIONS)]}-{i // len(REGIONS) + 1}" for i in range(args.injectors)]
    per = args.requests // args.injectors
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(
                write_injector,
                args.out / inj / "simulation.log",
                inj,
                per,
                args.start_at_ms,
                args.duration_s,
                args.seed + i,
            )
            for i, inj in enumerate(injectors)
        ]
        total = 0
        for future in futures:
            path, written = future.result()
            total += written
            print(f"wrote {path}: {written} requests", file=sys.stderr)
    meta = {
        "start_at_ms": args.start_at_ms,
        "injectors": {inj: inj.split("-")[0] for inj in injectors},
        "requests": total,
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"{total} requests in {len(injectors)} logs under {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
