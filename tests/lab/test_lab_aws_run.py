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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
# A quiet lead-in before the storm: a remote Gatling on a busy 2-core machine starts injecting up to
# 3.5 s after the shared start (issue 11's cold start), which the stall gate rightly calls invalid;
# below one planned user per injector-second the gate does not judge, the storm after it does.
LEAD_IN_S = 6
LEAD_IN_SHARE = 0.1


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
        self,
        name: str,
        *,
        rate_per_s: float,
        duration_s: int,
        injectors_per_region: int = 1,
        regions: tuple[str, ...] = REGIONS,
    ) -> Path:
        """A constant-rate profile aimed at the lab's target name, allowed by name."""
        info = self.lab.info
        listed = "".join(f"  - {{name: {r}}}\n" for r in regions)
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
    - {{duration_s: {LEAD_IN_S}, rate_per_s: {rate_per_s * LEAD_IN_SHARE:g}}}
    - {{duration_s: {duration_s}, rate_per_s: {rate_per_s}}}
scenario:
  requests:
    - {{name: read_feed, path: "/feed?page=1", weight: 1}}
regions:
{listed}injector:
  max_rate_per_s: {rate_per_s / len(regions) / injectors_per_region + 0.01:.2f}
"""
        )
        return path

    def spike(
        self,
        profile: Path,
        runs: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        regions: tuple[str, ...] = REGIONS,
    ) -> subprocess.Popen[str]:
        argv = [
            sys.executable, "-m", "loadorch", "run",
            "--profile", str(profile),
            "--runs-dir", str(runs),
            "--provider", "aws",
            "--aws-endpoint", self.lab.endpoint,
            "--operator-cidr", self.lab.info.operator_cidr,
            "--instance-type", "t3.micro",
            "--regions", ",".join(regions),
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
    # two more regions of their own for the faults aimed at a region (lost hosts, a refused apply)
    settings = lab_settings(root / "lab", latency=True, regions=(*REGIONS, "ca-central-1", "sa-east-1"))
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


def assert_nothing_left(world: World, run_id: str, regions: tuple[str, ...] = REGIONS) -> None:
    """0 resources tagged with the run in moto, 0 lab hosts still alive."""
    env = world.lab.env
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        left = find_run_resources(run_id, regions, world.lab.endpoint)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert left == [], left
    alive = [
        h for h in world.lab.client.hosts() if h.region in regions and h.state not in ("terminated", "lost")
    ]
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


@pytest.mark.timeout(1200)
def test_a_three_region_run_completes_with_each_regions_latency(world: World) -> None:
    """3 regions x 2 injectors with live metrics, alone in the lab (a run beside five others
    starts its cold JVMs so late that the stall gate rightly calls it invalid)."""
    runs = world.root / "runs-main"
    profile = world.profile("lab-main", rate_per_s=12, duration_s=20, injectors_per_region=2)
    started = time.monotonic()
    process = world.spike(profile, runs, "--influx-url", world.influx.url, env=world.env())
    code = finish(process)
    took_s = time.monotonic() - started
    text = output(process, runs, "lab-main")
    assert code == 0, text[-6000:]
    summary = summary_of(runs)
    run_id = summary["run_id"]
    assert summary["verdict"] == "passed", summary["reasons"]
    assert [i["id"] for i in summary["injectors"]] == [f"{r}-{n}" for r in REGIONS for n in (1, 2)]
    assert all(i["state"] == "completed" for i in summary["injectors"])
    planned = 12 * 20 + 12 * LEAD_IN_SHARE * LEAD_IN_S
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
    # the run's private key goes once every instance it opened is verified gone; state stays private
    directory = run_dir(runs)
    assert not (directory / "ssh" / "id_ed25519").exists(), summary["teardown"]["summary"]
    assert (directory / "terraform" / "terraform.tfstate").stat().st_mode & 0o077 == 0
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


@dataclass
class Case:
    """One spike run of the fault test and what is done to it mid-load."""

    name: str
    regions: tuple[str, ...]
    duration_s: int
    runs: Path
    process: subprocess.Popen[str]
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        return summary_of(self.runs)

    def log(self) -> str:
        return (self.runs.parent / f"{self.name}-spike.log").read_text(errors="replace")[-4000:]


LEASE_S = 6.0


@pytest.mark.timeout(1500)
def test_faults_on_ec2_hosts_each_end_in_a_truthful_verdict_and_nothing_left(world: World) -> None:
    """Five runs at once in one lab, each hit by one fault mid-load; regions chosen so that a
    fault aimed at one region (lost hosts, a failing apply) touches only its own run.

    - Ctrl-C (eu-west-2) and SIGHUP (us-east-1): interrupted, exit 130, partial results kept;
    - SIGKILL of spike (eu-west-2): the dead-man lease stops Gatling on the EC2 host, then
      `spike runs recover` destroys the fleet and records the run as aborted with its results;
    - every host of ca-central-1 lost (eu-west-2 + ca-central-1): degraded, naming the injector;
    - RunInstances refused in sa-east-1 (us-east-1 + sa-east-1): aborted before any load, both
      regions destroyed.

    """
    plan = {
        "ctrl-c": (("eu-west-2",), 240),
        "sighup": (("us-east-1",), 240),
        "sigkill": (("eu-west-2",), 300),
        "lost": (("eu-west-2", "ca-central-1"), 40),
        "apply-fails": (("us-east-1", "sa-east-1"), 20),
    }
    client = world.lab.client
    client.fail_apply(
        "sa-east-1",
        "You are not authorized to perform this operation (lab says no)",
        code="UnauthorizedOperation",
    )
    cases: dict[str, Case] = {}
    try:
        for name, (regions, duration_s) in plan.items():
            runs = world.root / f"runs-{name}"
            profile = world.profile(name, rate_per_s=4 * len(regions), duration_s=duration_s, regions=regions)
            env = world.env(SPIKE_LEASE_EXPIRES_S=f"{LEASE_S:g}")
            cases[name] = Case(
                name, regions, duration_s, runs, world.spike(profile, runs, env=env, regions=regions)
            )
        # each fault once its run's load arrives (they all go on meanwhile)
        directories = {}
        for name in ("ctrl-c", "sighup", "sigkill", "lost"):
            case = cases[name]
            directories[name] = wait_for_load(world, case.runs, case.process, name)
            wait_for(
                lambda d=directories[name]: world_requests(d) >= 12,
                timeout_s=180,
                what=f"{name}: load",
                interval_s=0.5,
            )
            if name == "ctrl-c":
                os.killpg(case.process.pid, signal.SIGINT)  # what the terminal sends to the foreground group
            elif name == "sighup":
                os.killpg(case.process.pid, signal.SIGHUP)
            elif name == "sigkill":
                os.killpg(case.process.pid, signal.SIGKILL)
                served_before = world_requests(directories[name])
                stopped = watch_until_gone(directories[name].name, timeout_s=LEASE_S + 60)
            else:
                assert client.lose_hosts("ca-central-1")
        # SIGKILL: the dead-man switch stops Gatling on the host; then recovery finishes the run,
        # while the other runs go on
        stopped.join()
        stopped_after_s = stopped.seconds
        assert stopped_after_s is not None, (
            f"Gatling of the killed run still ran {LEASE_S + 60:.0f} s after SIGKILL"
        )
        recovery = subprocess.Popen(
            [sys.executable, "-m", "loadorch", "runs", "recover", "--runs-dir", str(cases["sigkill"].runs)],
            cwd=REPO,
            env=world.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        recovered, _ = recovery.communicate(timeout=RUN_TIMEOUT_S)
        codes = {name: finish(case.process) for name, case in cases.items()}
    finally:
        client.clear_fail_apply("sa-east-1")
        for case in cases.values():
            if case.process.poll() is None:
                os.killpg(case.process.pid, signal.SIGKILL)
    assert recovery.returncode == 0, recovered

    for name in ("ctrl-c", "sighup"):
        summary = cases[name].summary()
        assert (codes[name], summary["verdict"]) == (130, "interrupted"), cases[name].log()
        assert summary["state"] == "finished" and summary["requests"]["total"] > 0
        assert summary["teardown"]["clean"] is True, summary["teardown"]

    summary = cases["sigkill"].summary()
    assert codes["sigkill"] == -signal.SIGKILL
    assert (summary["verdict"], summary["state"]) == ("aborted", "finished"), summary["reasons"]
    assert "died during" in summary["reasons"][0], summary["reasons"]
    assert summary["teardown"]["clean"] is True, summary["teardown"]
    # the host's results were fetched back from the EC2 host: more than the mirror held when spike died
    assert summary["requests"]["total"] >= served_before, summary["teardown"]
    assert "results fetched from 1 injector(s)" in summary["teardown"]["summary"], summary["teardown"]
    assert not (directories["sigkill"] / "ssh" / "id_ed25519").exists(), summary["teardown"]

    summary = cases["lost"].summary()
    assert (codes["lost"], summary["verdict"]) == (3, "degraded"), (summary["reasons"], cases["lost"].log())
    assert "ca-central-1-1" in " ".join(summary["reasons"]), summary["reasons"]
    states = {i["id"]: i["state"] for i in summary["injectors"]}
    assert states == {"eu-west-2-1": "completed", "ca-central-1-1": "failed"}, states
    assert summary["teardown"]["clean"] is True, summary["teardown"]  # its instance is terminated now

    summary = cases["apply-fails"].summary()
    assert (codes["apply-fails"], summary["verdict"]) == (3, "aborted"), cases["apply-fails"].log()
    reasons = " ".join(summary["reasons"])
    assert "sa-east-1" in reasons and "lab says no" in reasons, reasons
    assert "requests" not in summary  # nothing was measured, and nothing is claimed
    assert summary["teardown"]["clean"] is True, summary["teardown"]

    for case in cases.values():
        assert_nothing_left(world, case.summary()["run_id"], case.regions)
    print(f"\ninjector stopped {stopped_after_s:.1f} s after spike's SIGKILL (lease {LEASE_S:g} s)")


def world_requests(directory: Path) -> int:
    """Requests the injectors' mirrored simulation.logs hold so far."""
    total = 0
    for log in directory.glob("injectors/*/results/*/simulation.log"):
        lines = log.read_text(errors="replace").split("\n")[:-1]  # a last line still being written is not one
        total += sum(1 for line in lines if line.startswith("REQUEST"))
    return total


class watch_until_gone(threading.Thread):
    """From now on, when the run's last Java process on the lab hosts ended (`seconds`, or None)."""

    def __init__(self, run_id: str, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.run_id, self.timeout_s = run_id, timeout_s
        self.seconds: float | None = None
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        while time.monotonic() - started < self.timeout_s:
            if not gatling_on_lab_hosts(self.run_id):
                self.seconds = time.monotonic() - started
                return
            time.sleep(0.2)


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
