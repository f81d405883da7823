"""Provision and destroy an injector fleet with real Terraform against a moto server.

2 regions x 5 instances by default (`--regions`, `--instances`). Reported:

1. apply: `write_config` + `init` + `apply` + `inventory` (what spike does to get hosts), wall time;
2. destroy: `destroy`, wall time;
3. spike's own overhead: the wall time of the workspace calls minus the time the Terraform
   processes themselves ran, as a share of the wall time (target: <= 10 %);
4. the progress reports: how many, the longest gap between two of one region (target: <= the
   period, 10 s), and the last count per region.

Nothing talks to AWS: every provider endpoint is the moto server on loopback, the credentials are
moto's fake ones, and the provider comes from the local filesystem mirror.

    .venv/bin/python bench/bench_terraform.py
    .venv/bin/python bench/bench_terraform.py --instances 10 --regions eu-west-2,us-east-1,ap-south-1
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO

sys.path.insert(0, str(REPO / "tests" / "integration"))

from moto_server import MotoServer  # a test helper, found through the path above

from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.providers.terraform.config import FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.runner import PROGRESS_PERIOD_S, TerraformWorkspace
from loadorch.providers.terraform.ui import RESOURCES_EVENT


class Reports:
    """The `resources` progress events of one command, with when they came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    def __call__(self, region: str, event: str, detail: str) -> None:
        if event == RESOURCES_EVENT:
            self.events.append((time.monotonic(), region, detail))

    def summary(self, verb: str) -> str:
        regions = sorted({region for _, region, _ in self.events})
        gaps = []
        last = {}
        for region in regions:
            times = [t for t, r, _ in self.events if r == region]
            gaps += [b - a for a, b in itertools.pairwise(times)]
            last[region] = next(d for t, r, d in reversed(self.events) if r == region)
        longest = f"{max(gaps):.1f} s" if gaps else "-"
        ends = ", ".join(f"{r} {d}" for r, d in last.items())
        return f"progress {verb:<8} {len(self.events)} reports, longest gap {longest}; last: {ends}"


def public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def live_instances(moto: MotoServer, regions: list[str], run_id: str) -> int:
    count = 0
    for region in regions:
        pages = moto.client("ec2", region).describe_instances(
            Filters=[
                {"Name": "tag:SpikeRunId", "Values": [run_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )["Reservations"]
        count += sum(len(page["Instances"]) for page in pages)
    return count


def phase(name: str, wall_s: float, terraform_s: float) -> None:
    own = wall_s - terraform_s
    print(
        f"{name:<8} wall {wall_s:6.2f} s   terraform {terraform_s:6.2f} s   "
        f"spike {1000 * own:6.1f} ms ({100 * own / wall_s:5.2f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--regions", default="eu-west-2,us-east-1")
    parser.add_argument("--instances", type=int, default=5, help="instances per region")
    parser.add_argument("--instance-type", default="t3.micro")
    args = parser.parse_args()
    if shutil.which("terraform") is None or not terraform_aws_provider_mirrors():
        sys.exit("terraform or its hashicorp/aws filesystem mirror is missing: `spike doctor` shows what")
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    work = Path(tempfile.mkdtemp(prefix="spike-bench-terraform-"))
    run_id = f"bench-{int(time.time())}"
    with MotoServer(work / "moto") as moto:
        spec = FleetSpec(
            run_id=run_id,
            owner="bench@example.com",
            expires_at="2030-01-01T00:00:00Z",
            ttl_minutes=60,
            regions=tuple(RegionFleet(r, args.instances, args.instance_type) for r in regions),
            operator_cidr="203.0.113.7/32",
            ssh_public_key=public_key(),
            module_source=injector_fleet_module(),
            endpoint=moto.endpoint,
        )
        workspace = TerraformWorkspace(work / "terraform", moto.env)

        started = time.monotonic()
        workspace.write_config(spec)
        workspace.init()
        applied = Reports()
        workspace.apply(applied)
        inventory = workspace.inventory()
        apply_wall = time.monotonic() - started
        apply_terraform = workspace.terraform_seconds()
        hosts = len(inventory.hosts)
        live = live_instances(moto, regions, run_id)

        started = time.monotonic()
        destroyed = Reports()
        workspace.destroy(destroyed)
        destroy_wall = time.monotonic() - started
        destroy_terraform = workspace.terraform_seconds() - apply_terraform
        left = live_instances(moto, regions, run_id)

    expected = len(regions) * args.instances
    print(f"fleet: {len(regions)} regions x {args.instances} instances ({args.instance_type}) against moto")
    print(
        f"inventory: {hosts} hosts, {live} running in moto (expected {expected}); after destroy: {left} left"
    )
    for run in workspace.runs:
        print(f"  terraform {run.verb:<8} {run.elapsed_s:6.2f} s  exit {run.returncode}  {run.summary}")
    phase("apply", apply_wall, apply_terraform)
    phase("destroy", destroy_wall, destroy_terraform)
    total_wall = apply_wall + destroy_wall
    total_terraform = apply_terraform + destroy_terraform
    own = total_wall - total_terraform
    print(
        f"spike's own overhead: {1000 * own:.0f} ms of {total_wall:.2f} s = {100 * own / total_wall:.2f} %"
        "  (target <= 10 %)"
    )
    print(applied.summary("apply"))
    print(destroyed.summary("destroy"))
    print(
        f"(a report per region at least every {PROGRESS_PERIOD_S:.0f} s, also while Terraform prints nothing)"
    )
    print(f"workspace kept in {work / 'terraform'}")
    if hosts != expected or live != expected or left != 0:
        sys.exit("the fleet was not what was asked for, or something was left behind")


if __name__ == "__main__":
    main()
