"""`spike run --provider aws` end to end in the lab, as a user types it, and the faults on EC2 hosts.

Everything is real: the lab daemon (moto with hooks), Terraform with the AWS provider applying the
injector-fleet module in three regions at once, lab hosts (network namespaces, sshd, user_data),
host keys pinned from the console, Gatling on the hosts, toxiproxy adding each region's latency
between its hosts and the sample target, a real InfluxDB receiving the live points, and
`terraform destroy`. After every run: nothing tagged with the run in moto, no lab host left.

spike runs as a subprocess (`python -m loadorch run ...`) so that signals reach it as they would
from a terminal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, lab_settings, wait_for

from loadorch.cloud.leftovers import find_run_resources
from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.lab.control import Lab
from loadorch.lab.latency import find_toxiproxy
from loadorch.metrics.stack import LocalInflux
from loadorch.target.server import TargetConfig, TargetServer

if not terraform_aws_provider_mirrors():
    pytest.skip(
        "no filesystem mirror of the hashicorp/aws provider (`spike doctor`)", allow_module_level=True
    )
if find_toxiproxy() is None:
    pytest.skip("toxiproxy-server is missing: `make toxiproxy` builds it", allow_module_level=True)

REGIONS = ("eu-west-2", "us-east-1", "ap-southeast-1")
LATENCY_MS = {"eu-west-2": 5.0, "us-east-1": 40.0, "ap-southeast-1": 120.0}
RUN_TIMEOUT_S = 900


@dataclass
class World:
    lab: Lab
    target: TargetServer
    influx: LocalInflux
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            **self.lab.env,
            "SPIKE_HOME": str(self.root / "spike-home"),
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("AWS_PROFILE", None)
        env.update(extra)
        return env

    def profile(
        self, name: str, *, rate_per_s: float, duration_s: int, injectors_per_region: int = 1
    ) -> Path:
        """A constant-rate profile aimed at the lab's target name, allowed by name."""
        info = self.lab.info
        regions = "".join(f"  - {{name: {r}}}\n" for r in REGIONS)
        path = self.root / f"{name}.yaml"
        path.write_text(
            f"""\
name: {name}
target:
  base_url: {info.target_url}
  allow_hosts: [{info.target_host}]
baseline_rate_per_s: {rate_per_s}
shape:
  kind: steps
  steps:
    - {{duration_s: {duration_s}, rate_per_s: {rate_per_s}}}
scenario:
  requests:
    - {{name: read_feed, path: "/feed?page=1", weight: 1}}
regions:
{regions}injector:
  max_rate_per_s: {rate_per_s / len(REGIONS) / injectors_per_region + 0.01:.2f}
"""
        )
        return path

    def spike(
        self, profile: Path, runs: Path, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        argv = [
            sys.executable, "-m", "loadorch", "run",
            "--profile", str(profile),
            "--runs-dir", str(runs),
            "--provider", "aws",
            "--aws-endpoint", self.lab.endpoint,
            "--operator-cidr", self.lab.info.operator_cidr,
            "--instance-type", "t3.micro",
            "--regions", ",".join(REGIONS),
            "--ttl", "30",
            "--host-key-timeout", "120",
            "--no-history",
            *extra,
        ]  # fmt: skip
        log = (runs.parent / f"{profile.stem}-spike.log").open("w")
        return subprocess.Popen(
            argv, cwd=REPO, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("aws-run")
    settings = lab_settings(root / "lab", latency=True, regions=REGIONS)
    settings.latency_ms.update(LATENCY_MS)
    with (
        TargetServer(TargetConfig(host="127.0.0.1", port=settings.target_port)) as target,
        LocalInflux(root / "influxdb") as influx,
        Lab(settings) as lab,
    ):
        yield World(lab, target, influx, root)


def rows(influx: LocalInflux, query: str) -> list[dict[str, Any]]:
    """Every row of every series, as dicts with the series' tags merged in."""
    result = influx.query(query, db="spike")["results"][0]
    assert "error" not in result, f"{query}: {result['error']}"
    return [
        {**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))}
        for series in result.get("series", [])
        for values in series["values"]
    ]


def output(process: subprocess.Popen[str], runs: Path, name: str) -> str:
    return (runs.parent / f"{name}-spike.log").read_text(errors="replace")


def finish(process: subprocess.Popen[str], timeout_s: float = RUN_TIMEOUT_S) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def run_dir(runs: Path) -> Path:
    found = [p for p in runs.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def summary_of(runs: Path) -> dict[str, Any]:
    return json.loads((run_dir(runs) / "summary.json").read_text())


def assert_nothing_left(world: World, run_id: str) -> None:
    """0 resources tagged with the run in moto, 0 lab hosts still alive."""
    env = world.lab.env
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        left = find_run_resources(run_id, REGIONS, world.lab.endpoint)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert left == [], left
    # the module's runs go one after the other: once a run has ended, no lab host may be left
    alive = [h for h in world.lab.client.hosts() if h.state not in ("terminated", "lost")]
    assert alive == [], alive


def wait_for_load(world: World, runs: Path, process: subprocess.Popen[str], name: str) -> Path:
    """Until the run's journal says the go was given and requests arrive at the target."""

    def going() -> Path | None:
        assert process.poll() is None, output(process, runs, name)
        dirs = [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []
        if dirs and '"phase": "go"' in (dirs[0] / "journal.jsonl").read_text(errors="replace"):
            return dirs[0]
        return None

    return wait_for(going, timeout_s=600, what=f"{name}: the go", interval_s=0.5)


def test_a_three_region_run_completes_with_each_regions_latency(world: World) -> None:
    runs = world.root / "runs-main"
    profile = world.profile("lab-main", rate_per_s=12, duration_s=20, injectors_per_region=2)
    started = time.monotonic()
    process = world.spike(
        profile,
        runs,
        "--influx-url",
        world.influx.url,
        env=world.env(),
    )
    code = finish(process)
    took_s = time.monotonic() - started
    text = output(process, runs, "lab-main")
    assert code == 0, text[-6000:]
    summary = summary_of(runs)
    run_id = summary["run_id"]
    assert summary["verdict"] == "passed", summary["reasons"]
    assert [i["id"] for i in summary["injectors"]] == [f"{r}-{n}" for r in REGIONS for n in (1, 2)]
    assert all(i["state"] == "completed" for i in summary["injectors"])
    planned = 12 * 20
    assert abs(summary["requests"]["total"] - planned) / planned <= 0.05, summary["requests"]
    assert summary["requests"]["ko"] == 0
    # the merged report shows each region's latency: at least what the lab adds, in that order
    # (the target's own service time and the injectors' queueing come on top, alike in every region)
    p50 = {r: summary["by_region"][r]["all"]["p50"] for r in REGIONS}
    for region, added in LATENCY_MS.items():
        assert p50[region] >= added, (region, p50)
        apart = p50[region] - p50["eu-west-2"]
        assert abs(apart - (added - LATENCY_MS["eu-west-2"])) <= 20, (region, p50)
    # every phase of an aws run happened, and was timed
    terraform = summary["teardown"]["terraform"]
    assert terraform["apply_s"] > 0 and terraform["destroy_s"] > 0 and terraform["host_keys_s"] >= 0
    assert summary["teardown"]["clean"] is True, summary["teardown"]
    # live points per region reached InfluxDB while the run went on, with the region's latency
    live = rows(
        world.influx,
        f"SELECT count(\"count\"), median(p50) FROM gatling WHERE run_id='{run_id}' AND request='allRequests' "
        "AND status='ok' GROUP BY region",
    )
    assert {r["region"] for r in live} == set(REGIONS), live
    live_p50 = {r["region"]: r["median"] for r in live}
    for region, added in LATENCY_MS.items():
        apart = live_p50[region] - live_p50["eu-west-2"]
        assert abs(apart - (added - LATENCY_MS["eu-west-2"])) <= 20, (region, live_p50)
    assert_nothing_left(world, run_id)
    print(
        f"\nlab run 3 regions x 2 injectors: {took_s:.0f} s; terraform {terraform}; p50 {p50}; live {live_p50}"
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "sighup"])
def test_a_signal_mid_load_stops_collects_and_destroys(world: World, signum: signal.Signals) -> None:
    name = f"lab-{signum.name.lower()}"
    runs = world.root / f"runs-{name}"
    process = world.spike(world.profile(name, rate_per_s=6, duration_s=120), runs)
    directory = wait_for_load(world, runs, process, name)
    wait_for(lambda: world_requests(directory) >= 20, timeout_s=120, what="load arriving", interval_s=0.5)
    os.killpg(process.pid, signum)  # what the terminal sends to the whole foreground group
    code = finish(process)
    summary = summary_of(runs)
    assert (code, summary["verdict"]) == (130, "interrupted"), output(process, runs, name)[-4000:]
    assert summary["state"] == "finished"
    assert summary["requests"]["total"] > 0  # what the injectors had sent was collected
    assert summary["teardown"]["clean"] is True, summary["teardown"]
    assert_nothing_left(world, summary["run_id"])


def test_sigkill_of_spike_then_recovery_on_ec2_hosts(world: World) -> None:
    name = "lab-sigkill"
    runs = world.root / f"runs-{name}"
    lease_s = 6.0
    process = world.spike(
        world.profile(name, rate_per_s=6, duration_s=300),
        runs,
        env=world.env(SPIKE_LEASE_EXPIRES_S=f"{lease_s:g}"),
    )
    directory = wait_for_load(world, runs, process, name)
    wait_for(lambda: world_requests(directory) >= 20, timeout_s=120, what="load arriving", interval_s=0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = time.monotonic()
    # the dead-man switch: on every EC2 host, the run's Gatling stops once the lease is not renewed
    served_before = world_requests(directory)
    wait_for(
        lambda: not gatling_on_lab_hosts(directory.name), timeout_s=lease_s + 60, what="injectors stopped"
    )
    stopped_after_s = time.monotonic() - killed_at
    # then recovery: the fleet is destroyed from the run's own state and the run recorded
    recovered = subprocess.run(
        [sys.executable, "-m", "loadorch", "runs", "recover", "--runs-dir", str(runs)],
        cwd=REPO,
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    summary = summary_of(runs)
    assert summary["verdict"] == "aborted" and summary["state"] == "finished", summary["reasons"]
    assert summary["teardown"]["clean"] is True, summary["teardown"]
    assert summary["requests"]["total"] >= served_before  # the hosts' results were fetched back
    assert_nothing_left(world, summary["run_id"])
    print(f"\ninjectors stopped {stopped_after_s:.1f} s after SIGKILL (lease {lease_s:g} s)")


def test_a_regions_hosts_lost_mid_run_degrade_the_run_naming_them(world: World) -> None:
    name = "lab-lost"
    runs = world.root / f"runs-{name}"
    process = world.spike(
        world.profile(name, rate_per_s=6, duration_s=40), runs, env=world.env(SPIKE_LEASE_EXPIRES_S="6")
    )
    directory = wait_for_load(world, runs, process, name)
    wait_for(lambda: world_requests(directory) >= 20, timeout_s=120, what="load arriving", interval_s=0.5)
    lost = world.lab.client.lose_hosts("us-east-1")
    assert lost
    code = finish(process)
    summary = summary_of(runs)
    text = output(process, runs, name)
    assert summary["verdict"] in ("degraded", "invalid"), (
        summary["verdict"],
        summary["reasons"],
        text[-3000:],
    )
    assert code == 3
    reasons = " ".join(summary["reasons"])
    assert "us-east-1-1" in reasons, reasons
    by_id = {i["id"]: i["state"] for i in summary["injectors"]}
    assert by_id["eu-west-2-1"] == by_id["ap-southeast-1-1"] == "completed", by_id
    assert by_id["us-east-1-1"] != "completed", by_id
    assert_nothing_left(world, summary["run_id"])


def test_an_apply_failure_in_one_region_destroys_every_region(world: World) -> None:
    name = "lab-apply-fails"
    runs = world.root / f"runs-{name}"
    # an SCP that denies RunInstances in one region: an error Terraform does not retry
    world.lab.client.fail_apply(
        "ap-southeast-1",
        "You are not authorized to perform this operation (lab says no)",
        code="UnauthorizedOperation",
    )
    try:
        process = world.spike(world.profile(name, rate_per_s=6, duration_s=20), runs)
        code = finish(process)
    finally:
        world.lab.client.clear_fail_apply("ap-southeast-1")
    summary = summary_of(runs)
    text = output(process, runs, name)
    assert code == 3, text[-3000:]
    assert summary["verdict"] == "aborted", summary["reasons"]
    reasons = " ".join(summary["reasons"])
    assert "ap-southeast-1" in reasons and "lab says no" in reasons, reasons
    assert "requests" not in summary  # nothing was measured, and nothing is claimed
    assert summary["teardown"]["clean"] is True, summary["teardown"]
    assert_nothing_left(world, summary["run_id"])


def world_requests(directory: Path) -> int:
    """Requests the injectors' mirrored simulation.logs hold so far."""
    total = 0
    for log in directory.glob("injectors/*/results/*/simulation.log"):
        total += sum(1 for line in log.read_text(errors="replace").splitlines() if line.startswith("REQUEST"))
    return total


def gatling_on_lab_hosts(run_id: str) -> list[int]:
    """Pids of Java processes of the run anywhere on this machine (the lab hosts share its pid space)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "java" in (proc.info["name"] or "") and run_id in cmdline:
            found.append(proc.pid)
    return found
