"""`--provider static`, for real: sshd hosts on 127.0.0.2-4 are the injectors.

Each host is a real OpenSSH server with its own host key; spike pushes Gatling's jars, the
compiled simulation, the feeders and the agent zipapp to it over SSH, starts Gatling detached on
it, mirrors its files while it runs, fetches its results and merges them. The hosts share this
machine's filesystem, so each gets its own base directory, as separate machines would.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import java_processes, spike_run, write_profile
from sshd import SshdHost, start_hosts
from test_run_influx import rows

from loadorch.errors import ExitCode
from loadorch.metrics.stack import LocalInflux
from loadorch.orchestrator import LiveView, RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.static import StaticProvider
from loadorch.target.server import TargetServer
from loadorch.transport.hostkeys import fingerprint_of_public_key_line, generate_client_key

# 60 arrivals/s, two thirds from eu-west-2; at most 25 per injector: 2 injectors there, 1 in us-east-1
REGIONS = "  - {name: eu-west-2, weight: 2}\n  - {name: us-east-1, weight: 1}\n"
LABELS = ("eu-west-2", "eu-west-2", "us-east-1")


@dataclass
class Fleet:
    hosts: list[SshdHost]
    inventory: Path
    base_dirs: list[Path]


def write_inventory(
    path: Path, hosts: list[SshdHost], key: Path, base_dirs: list[Path], **override: str
) -> Path:
    lines = ["defaults:", "  user: root", f"  key: {key}", "hosts:"]
    for host, label, base in zip(hosts, LABELS, base_dirs, strict=True):
        fingerprint = override.get(host.address, host.host_fingerprint)
        lines += [
            f"  - host: {host.address}",
            f"    port: {host.port}",
            f"    region: {label}",
            f"    host_key: {fingerprint}",
            f"    base_dir: {base}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    key = tmp_path / "client_ed25519"
    public = generate_client_key(key)
    hosts = start_hosts(tmp_path / "hosts", 3, public)
    base_dirs = [tmp_path / f"remote{i + 1}" for i in range(3)]
    try:
        yield Fleet(hosts, write_inventory(tmp_path / "hosts.yaml", hosts, key, base_dirs), base_dirs)
    finally:
        for host in hosts:
            host.stop()


class Trigger:
    """An observer that does something once, `at_s` seconds into the load."""

    def __init__(self, at_s: float, action: Any) -> None:
        self.at_s = at_s
        self.action = action
        self.done = threading.Event()
        self.phases: list[tuple[str, str]] = []

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.append((name, detail))

    def tick(self, view: LiveView) -> None:
        if view.elapsed_s >= self.at_s and not self.done.is_set():
            self.done.set()
            self.action()


def run_static(
    tmp_path: Path, fleet: Fleet, target: TargetServer, *, observer: Any = None, **settings: Any
) -> Any:
    profile = write_profile(tmp_path, rate_per_s=60, duration_s=12, regions=REGIONS, max_rate_per_s=25)
    return execute_run(
        load_profile(profile),
        provider=StaticProvider(fleet.inventory, cache_dir=build_cache_dir()),
        settings=RunSettings(runs_dir=tmp_path / "runs", cache_dir=build_cache_dir(), **settings),
        target=target.url,
        observer=observer,
    )


def test_three_ssh_hosts_in_two_regions_run_one_merged_test(
    tmp_path: Path,
    fleet: Fleet,
    target: TargetServer,
    influx: LocalInflux,
) -> None:
    outcome = run_static(tmp_path, fleet, target, influx={"url": influx.url})
    summary = outcome.summary
    assert outcome.exit_code == ExitCode.PASSED, summary["reason"]
    assert [(i["id"], i["state"]) for i in summary["injectors"]] == [
        ("eu-west-2-1", "completed"),
        ("eu-west-2-2", "completed"),
        ("us-east-1-1", "completed"),
    ]
    # everything was pushed once to every host, into its own content-addressed cache
    pushed = summary["teardown"]["deploy"]["pushed"]
    assert all(sorted(pushed[kind]) == ["eu-west-2-1", "eu-west-2-2", "us-east-1-1"] for kind in pushed)
    for base in fleet.base_dirs:
        assert list((base / "cache" / "libs").glob("*/gatling-core-3.11.5.jar"))
        assert len(list((base / "runs" / outcome.plan.run_id).iterdir())) == 1
    # the remote logs came home and were merged: requests within 3% of the plan, one HTML report
    planned = outcome.plan.planned_requests
    assert abs(summary["requests"]["total"] - planned) <= 0.03 * planned
    assert (outcome.run_dir / "report" / "index.html").is_file()
    assert sorted(p.name for p in (outcome.run_dir / "report").glob("*.log")) == [
        "eu-west-2-1.log",
        "eu-west-2-2.log",
        "us-east-1-1.log",
    ]
    # clocks were measured on every host (one machine here: no real offset) and the start was shared
    clock = summary["clock"]
    assert set(clock["offsets_ms"]) == {"eu-west-2-1", "eu-west-2-2", "us-east-1-1"}
    assert clock["skew_ms"] < 50
    assert summary["late_injectors"] == []
    # the remote agents' points were forwarded by spike: every injector's seconds are in InfluxDB,
    # and their ok+ko counts add up to the merged logs exactly
    assert summary["metrics"]["forwarded"]["unsent"] == 0
    run_id = outcome.plan.run_id
    counted = rows(
        influx,
        f"SELECT sum(\"count\") FROM gatling WHERE run_id='{run_id}' AND request='allRequests' "
        "AND (status='ok' OR status='ko')",
    )
    assert counted[0]["sum"] == summary["requests"]["total"]
    health = rows(
        influx, f"SELECT count(cpu_pct) FROM injector_health WHERE run_id='{run_id}' GROUP BY injector"
    )
    assert sorted(r["injector"] for r in health) == ["eu-west-2-1", "eu-west-2-2", "us-east-1-1"]
    assert java_processes(run_id) == []

    # A second run: nothing is pushed again, and every SSH connection dropped mid-run is survived.
    def drop_everything() -> None:
        for host in fleet.hosts:
            host.drop_connections()

    trigger = Trigger(4.0, drop_everything)
    again = run_static(tmp_path, fleet, target, observer=trigger, html_report="off")
    assert trigger.done.is_set()
    assert again.exit_code == ExitCode.PASSED, again.summary["reason"]
    assert all(i["state"] == "completed" for i in again.summary["injectors"])
    assert again.summary["teardown"]["deploy"]["pushed"] == {
        "libs": [],
        "sims": [],
        "feeders": [],
        "agent": [],
    }
    assert abs(again.summary["requests"]["total"] - planned) <= 0.03 * planned


def test_a_killed_remote_injector_gives_a_degraded_run_that_names_it(
    tmp_path: Path, fleet: Fleet, target: TargetServer
) -> None:
    victim_base = str(fleet.base_dirs[1])  # eu-west-2-2's host

    def kill_gatling() -> None:
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "java" in (proc.info["name"] or "") and victim_base in cmdline:
                os.kill(proc.pid, signal.SIGKILL)

    outcome = run_static(tmp_path, fleet, target, observer=Trigger(5.0, kill_gatling), html_report="off")
    summary = outcome.summary
    assert summary["verdict"] == "degraded", summary["reason"]
    assert "eu-west-2-2" in summary["reason"]
    victim = next(i for i in summary["injectors"] if i["id"] == "eu-west-2-2")
    assert victim["state"] == "failed"
    assert 0.1 < victim["delivered_share"] < 0.8
    assert all(i["state"] == "completed" for i in summary["injectors"] if i["id"] != "eu-west-2-2")


def test_an_impostor_host_key_is_refused_and_nothing_runs(
    tmp_path: Path, fleet: Fleet, target: TargetServer
) -> None:
    impostor = fleet.hosts[2]
    # the inventory pins another key than the one the host presents
    wrong = fingerprint_of_public_key_line(generate_client_key(tmp_path / "some_other_key"))
    inventory = write_inventory(
        tmp_path / "impostor.yaml",
        fleet.hosts,
        tmp_path / "client_ed25519",
        fleet.base_dirs,
        **{impostor.address: wrong},
    )
    profile = write_profile(tmp_path, rate_per_s=60, duration_s=5, regions=REGIONS, max_rate_per_s=25)
    result = spike_run(
        profile, tmp_path / "runs", "--provider", "static", "--hosts", str(inventory), "--target", target.url
    )
    assert result.exit_code != 0
    assert "us-east-1-1" in result.output and impostor.address in result.output
    assert "host key mismatch" in result.output and "possible impostor" in result.output
    # nothing was deployed or started anywhere
    assert not any((base / "runs").exists() for base in fleet.base_dirs)
    assert java_processes(str(tmp_path)) == []


def test_an_inventory_without_enough_hosts_in_a_region_is_refused_before_connecting(
    tmp_path: Path, fleet: Fleet, target: TargetServer
) -> None:
    profile = write_profile(tmp_path, rate_per_s=60, duration_s=5, regions=REGIONS, max_rate_per_s=10)
    result = spike_run(
        profile,
        tmp_path / "runs",
        "--provider",
        "static",
        "--hosts",
        str(fleet.inventory),
        "--target",
        target.url,
    )
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert "region 'eu-west-2' needs 4 injector(s)" in result.output
    assert "has 2 host(s)" in result.output
    assert all(not host.log_file.read_text().count("Accepted publickey") for host in fleet.hosts)
