"""A whole `spike run --provider aws` in the lab, timed phase by phase (needs root and `make deps`).

3 regions x 2 injectors by default (`--regions`, `--injectors`), eu-west-2 +5 ms, us-east-1 +40 ms,
ap-southeast-1 +120 ms between each region's hosts and the sample target, live points into a real
InfluxDB. Reported, from the run's journal and its teardown report:

- apply (Terraform, every region at once), boot (the consoles show the host keys; SSH up),
  bootstrap (user_data done), deploy (artifacts pushed), launch (JVMs up to the go), load,
  collect, destroy (with the leftovers check), and the whole run;
- each region's p50 in the merged report and in InfluxDB against the lab's configured latency.

    sudo .venv/bin/python bench/bench_lab_run.py
    sudo .venv/bin/python bench/bench_lab_run.py --regions eu-west-2,us-east-1 --injectors 1 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO

from loadorch.lab.control import Lab
from loadorch.lab.state import LabSettings
from loadorch.metrics.stack import LocalInflux
from loadorch.target.server import TargetConfig, TargetServer

LATENCY_MS = {"eu-west-2": 5.0, "us-east-1": 40.0, "ap-southeast-1": 120.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def profile(
    path: Path,
    target_url: str,
    target_host: str,
    regions: list[str],
    rate: float,
    duration_s: int,
    per_region: int,
) -> Path:
    listed = "".join(f"  - {{name: {r}}}\n" for r in regions)
    path.write_text(
        f"""\
name: bench-lab
target: {{base_url: "{target_url}", allow_hosts: [{target_host}]}}
baseline_rate_per_s: {rate}
shape: {{kind: steps, steps: [{{duration_s: {duration_s}, rate_per_s: {rate}}}]}}
scenario: {{requests: [{{name: read_feed, path: "/feed?page=1", weight: 1}}]}}
regions:
{listed}injector: {{max_rate_per_s: {rate / len(regions) / per_region + 0.01:.2f}}}
"""
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", default="eu-west-2,us-east-1,ap-southeast-1")
    parser.add_argument("--injectors", type=int, default=2, help="per region")
    parser.add_argument("--rate", type=float, default=12.0, help="new users per second, in total")
    parser.add_argument("--duration", type=int, default=30, help="seconds of load")
    args = parser.parse_args()
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    root = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    settings = LabSettings(
        state_dir=root / "lab",
        port=free_port(),
        regions=tuple(regions),
        latency_ms={r: LATENCY_MS.get(r, 60.0) for r in regions},
        target_port=free_port(),
    )
    with (
        TargetServer(TargetConfig(host="127.0.0.1", port=settings.target_port)),
        LocalInflux(root / "influxdb") as influx,
        Lab(settings) as lab,
    ):
        info = lab.info
        path = profile(
            root / "bench-lab.yaml",
            info.target_url,
            info.target_host,
            regions,
            args.rate,
            args.duration,
            args.injectors,
        )
        env = {**os.environ, **lab.env, "SPIKE_HOME": str(root / "spike-home"), "COLUMNS": "200"}
        env.pop("AWS_PROFILE", None)
        runs = root / "runs"
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable, "-m", "loadorch", "run", "--profile", str(path), "--runs-dir", str(runs),
                "--provider", "aws", "--aws-endpoint", lab.endpoint, "--operator-cidr", info.operator_cidr,
                "--instance-type", "t3.micro", "--regions", ",".join(regions), "--ttl", "30",
                "--no-history", "--influx-url", influx.url,
            ],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        whole_s = time.monotonic() - started
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-2000:])
            print(f"spike exited {done.returncode}")
            return 1
        run_dir = next(p for p in runs.iterdir() if p.is_dir())
        summary = json.loads((run_dir / "summary.json").read_text())
        at = {}
        for line in (run_dir / "journal.jsonl").read_text().splitlines():
            entry = json.loads(line)
            at.setdefault(entry["phase"], entry["at_ms"] / 1000)
        terraform = summary["teardown"]["terraform"]
        deploy_s = at["deployed"] - at["provisioned"] - terraform.get("bootstrap_s", 0.0)
        rows = [
            ("apply (every region at once)", terraform["apply_s"]),
            ("boot: host keys on the consoles", terraform.get("host_keys_s", 0.0)),
            ("  SSH up (rest of provisioning)", at["provisioned"] - at["provisioning"] - terraform["apply_s"] - terraform.get("host_keys_s", 0.0)),
            ("bootstrap done (user_data)", terraform.get("bootstrap_s", 0.0)),
            ("deploy (artifacts pushed, target checked, clocks)", deploy_s),
            ("launch: JVMs up to the go", at["go"] - at["deployed"]),
            ("load", at["load-ended"] - at["go"]),
            ("collect (results fetched, agents drained)", at["collected"] - at["load-ended"]),
            ("destroy + leftovers check", at["torn-down"] - at["tearing-down"]),
            ("whole run (command to exit)", whole_s),
        ]  # fmt: skip
        print(
            f"\nspike run --provider aws in the lab: {len(regions)} regions x {args.injectors} injectors, {summary['verdict']}"
        )
        for name, seconds in rows:
            print(f"  {name:<52} {seconds:7.1f} s")
        live = influx.query(
            f"SELECT median(p50) FROM gatling WHERE run_id='{summary['run_id']}' AND request='allRequests' "
            "AND status='ok' GROUP BY region",
            db="spike",
        )["results"][0].get("series", [])
        live_p50 = {s["tags"]["region"]: s["values"][0][1] for s in live}
        print("\n  region            lab latency   report p50   InfluxDB median p50")
        for region in regions:
            report = summary["by_region"][region]["all"]["p50"]
            print(
                f"  {region:<16} {settings.latency_ms[region]:8.0f} ms {report:9} ms {live_p50.get(region, float('nan')):12.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
