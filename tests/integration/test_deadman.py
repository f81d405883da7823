"""The remote dead-man switch, for real: sshd hosts on 127.0.0.2-4, real Gatling JVMs and agents.

What is checked: a spike that dies (SIGKILL) leaves nothing running on its hosts once its lease
expires; a host whose sshd dies mid-run is reconnected to when it returns and its results come
home; a host that never returns is named, and teardown says it could not verify it; and a remote
agent's exit status is recorded only after its drain, so InfluxDB gets every point (10 runs).

The hosts share this machine's process table, so "nothing runs there any more" is checked
directly in /proc (psutil), independently of what spike says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import write_profile
from test_run_influx import rows
from test_run_static import REGIONS, Fleet, Trigger, fleet  # noqa: F401  (the fixture is used by name)

from loadorch.errors import ExitCode
from loadorch.metrics.stack import LocalInflux
from loadorch.orchestrator import RunOutcome, RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.static import StaticProvider
from loadorch.target.server import TargetServer

EXACT_RUNS = int(os.environ.get("SPIKE_TEST_EXACT_RUNS", "10"))
SHORT_LEASE_S = 4.0  # the tests' lease; spike's default is 30 s
VICTIM = "eu-west-2-2"  # the injector on the second host (127.0.0.3)


def run_processes(base: Path) -> list[psutil.Process]:
    """Live processes of a host's runs: launcher shells, JVMs, agents, watchdogs (by command or cwd)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        if str(base) in " ".join(info["cmdline"] or []) or (info["cwd"] or "").startswith(str(base)):
            found.append(proc)
    return found


def kinds(processes: list[psutil.Process]) -> set[str]:
    """What the processes are: java, agent, watchdog, shell."""
    names = set()
    for proc in processes:
        with _gone_ok():
            cmdline = " ".join(proc.cmdline())
            names.add(
                "java"
                if "java" in proc.name()
                else "agent"
                if "spike-agent.pyz" in cmdline
                else "watchdog"
                if ".deadman.py" in cmdline
                else "shell"
            )
    return names


class _gone_ok:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, psutil.Error)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture
def leftovers(fleet: Fleet) -> Iterator[None]:  # noqa: F811
    """Whatever a failed test leaves on the hosts is stopped (by pid: only what the test started)."""
    yield
    for base in fleet.base_dirs:
        for proc in run_processes(base):
            with _gone_ok():
                proc.kill()


def injector_dirs(base: Path) -> list[Path]:
    return sorted(p for p in base.glob("runs/*/*") if p.is_dir())


def loading(base: Path) -> bool:
    """Gatling on this host is injecting: its simulation.log has requests."""
    return any(b"\nREQUEST\t" in log.read_bytes() for log in base.glob("runs/*/*/results/*/simulation.log"))


def test_a_killed_spike_leaves_nothing_running_once_the_lease_expires(
    tmp_path: Path,
    fleet: Fleet,  # noqa: F811
    target: TargetServer,
    leftovers: None,
) -> None:
    # 60/s: two injectors in eu-west-2 and one in us-east-1, one on each host
    profile = write_profile(tmp_path, rate_per_s=60, duration_s=120, regions=REGIONS, max_rate_per_s=25)
    argv = [sys.executable, "-m", "loadorch", "run", "--profile", str(profile), "--runs-dir",
            str(tmp_path / "runs"), "--provider", "static", "--hosts", str(fleet.inventory),
            "--target", target.url, "--html-report", "off"]  # fmt: skip
    env = {**os.environ, "SPIKE_LEASE_EXPIRES_S": f"{SHORT_LEASE_S:g}", "COLUMNS": "200"}
    with (tmp_path / "spike.log").open("w") as log:
        spike = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(
            lambda: spike.poll() is not None or all(loading(base) for base in fleet.base_dirs),
            120,
            "every host injects",
        )
        assert spike.poll() is None, (tmp_path / "spike.log").read_text()
        before = {base: kinds(run_processes(base)) for base in fleet.base_dirs}
        spike.send_signal(signal.SIGKILL)
        spike.wait(10)
        killed = time.monotonic()
    finally:
        if spike.poll() is None:
            spike.kill()
    assert all({"java", "agent", "watchdog"} <= found for found in before.values()), before
    # nothing stops them at once: no renewal comes any more, and the lease is still fresh
    assert all("java" in kinds(run_processes(base)) for base in fleet.base_dirs)
    wait_for(
        lambda: not any(run_processes(base) for base in fleet.base_dirs),
        SHORT_LEASE_S + 15,
        "every Gatling JVM, agent, launcher and watchdog on the hosts is gone",
    )
    gone_after_s = time.monotonic() - killed
    print(
        f"\nspike SIGKILLed; every remote process gone {gone_after_s:.1f} s later (lease {SHORT_LEASE_S:g} s)"
    )
    # the lease, not something else, stopped them (renewed every third of it)
    assert gone_after_s > SHORT_LEASE_S * 2 / 3 - 0.5
    for base in fleet.base_dirs:
        (workdir,) = injector_dirs(base)
        why = (workdir / "deadman.log").read_text()
        assert "lease expired: deadman.lease not renewed for" in why and f"(limit {SHORT_LEASE_S:g} s)" in why
        assert "SIGTERM to process group(s)" in why
        assert (workdir / "console.log.exit").read_text().strip() == "143"  # Gatling took the TERM
    # the next spike command finishes the run from what was mirrored before spike died
    recovered = subprocess.run(
        [sys.executable, "-m", "loadorch", "runs", "recover", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    (summary_path,) = (tmp_path / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert (summary["verdict"], summary["exit_code"], summary["state"]) == ("aborted", 3, "finished")
    assert summary["requests"]["total"] > 0, "the mirrored logs were judged"


def test_every_point_of_every_remote_agent_reaches_influxdb_in_every_run(
    tmp_path: Path,
    fleet: Fleet,  # noqa: F811
    target: TargetServer,
    influx: LocalInflux,
) -> None:
    profile = load_profile(
        write_profile(tmp_path, rate_per_s=60, duration_s=5, regions=REGIONS, max_rate_per_s=25)
    )
    figures = []
    for attempt in range(EXACT_RUNS):
        outcome = execute_run(
            profile,
            provider=StaticProvider(fleet.inventory, cache_dir=build_cache_dir()),
            settings=RunSettings(
                runs_dir=tmp_path / "runs",
                cache_dir=build_cache_dir(),
                html_report="off",
                influx={"url": influx.url},
            ),
            target=target.url,
        )
        summary = outcome.summary
        # (on a busy machine a run may be judged invalid for its fidelity: the counts must still agree)
        completed = [i["state"] for i in summary["injectors"]] == ["completed"] * 3
        assert completed, f"run {attempt + 1}: {summary['reason']}"
        run_id = outcome.plan.run_id
        counted = rows(
            influx,
            f"SELECT sum(\"count\") FROM gatling WHERE run_id='{run_id}' AND request='allRequests' "
            "AND (status='ok' OR status='ko')",
        )
        in_influx = counted[0]["sum"] if counted else 0
        figures.append((summary["requests"]["total"], in_influx, summary["metrics"]["forwarded"]["unsent"]))
    print(f"\n(log requests, InfluxDB requests, unsent) per run: {figures}")
    assert all(logged == stored and unsent == 0 for logged, stored, unsent in figures), figures


def static_run(
    tmp_path: Path,
    fleet: Fleet,  # noqa: F811
    target: TargetServer,
    observer: Any,
    **provider: float,
) -> tuple[RunOutcome, StaticProvider]:
    profile = write_profile(tmp_path, rate_per_s=60, duration_s=14, regions=REGIONS, max_rate_per_s=25)
    chosen = StaticProvider(fleet.inventory, cache_dir=build_cache_dir(), **provider)
    outcome = execute_run(
        load_profile(profile),
        provider=chosen,
        settings=RunSettings(runs_dir=tmp_path / "runs", cache_dir=build_cache_dir(), html_report="off"),
        target=target.url,
        observer=observer,
    )
    return outcome, chosen


def test_a_host_whose_sshd_dies_and_returns_is_reconnected_and_its_results_come_home(
    tmp_path: Path,
    fleet: Fleet,  # noqa: F811
    target: TargetServer,
    leftovers: None,
) -> None:
    victim = fleet.hosts[1]
    back = threading.Event()

    def sshd_dies_and_returns() -> None:
        victim.stop()  # the listener and every connection: spike's sessions die, its processes run on

        def restart() -> None:
            victim.start()  # same address, port and host key
            back.set()

        threading.Timer(2.5, restart).start()

    trigger = Trigger(3.0, sshd_dies_and_returns)
    # the outage (2.5 s) is shorter than the lease, which must be renewed again afterwards: the run
    # lasts far longer than one lease
    outcome, provider = static_run(
        tmp_path, fleet, target, trigger, lease_expires_s=SHORT_LEASE_S * 1.5, lease_renew_s=1
    )
    summary = outcome.summary
    assert trigger.done.is_set() and back.wait(10)
    # (the verdict itself may be "invalid" on a machine too busy for Gatling to keep to the plan)
    assert all(i["state"] == "completed" for i in summary["injectors"]), summary["reason"]
    assert provider.fleet is not None and provider.fleet.opened[VICTIM] >= 2  # it reconnected
    planned = outcome.plan.planned_requests
    assert abs(summary["requests"]["total"] - planned) <= 0.03 * planned
    victim_log = outcome.run_dir / "injectors" / VICTIM / "results"
    assert any(b"\nREQUEST\t" in p.read_bytes() for p in victim_log.glob("*/simulation.log"))
    assert summary["teardown"]["clean"], summary["teardown"]
    assert "no process of the run is left on 3 of 3" in summary["teardown"]["summary"]
    assert "deadman" not in summary["teardown"]  # no watchdog had to step in
    assert not run_processes(fleet.base_dirs[1])


def test_a_host_whose_sshd_dies_for_good_is_named_and_its_lease_stops_its_processes(
    tmp_path: Path,
    fleet: Fleet,  # noqa: F811
    target: TargetServer,
    leftovers: None,
) -> None:
    victim_base = fleet.base_dirs[1]
    seen: dict[str, Any] = {}

    def sshd_dies() -> None:
        seen["kinds"] = kinds(run_processes(victim_base))
        fleet.hosts[1].stop()
        seen["at"] = time.monotonic()

        def watch() -> None:  # when do the host's processes end, seen from /proc?
            while run_processes(victim_base) and time.monotonic() - seen["at"] < 60:
                time.sleep(0.2)
            seen["gone_after_s"] = time.monotonic() - seen["at"]

        threading.Thread(target=watch, daemon=True).start()

    trigger = Trigger(3.0, sshd_dies)
    outcome, _ = static_run(
        tmp_path, fleet, target, trigger, lease_expires_s=SHORT_LEASE_S, deadman_grace_s=2
    )
    summary = outcome.summary
    assert trigger.done.is_set() and {"java", "agent", "watchdog"} <= seen["kinds"], seen
    # the run went on for the others; the lost host is named (degraded, or invalid when its region
    # missed the plan by more than the fidelity gate allows)
    assert summary["verdict"] in ("degraded", "invalid"), summary["reason"]
    assert f"{VICTIM} (failed" in summary["reason"]
    states = {i["id"]: i["state"] for i in summary["injectors"]}
    assert states == {"eu-west-2-1": "completed", VICTIM: "failed", "us-east-1-1": "completed"}
    # teardown says what it could not check, and why load stops there anyway
    teardown = summary["teardown"]
    assert not teardown["clean"]
    assert outcome.exit_code == ExitCode.INFRASTRUCTURE
    assert f"unverified: {VICTIM}: " in teardown["summary"]
    assert "the lease stops them" in teardown["summary"]
    assert "no process of the run is left on 2 of 3" in teardown["summary"]
    # ... and it does: seen from this machine's /proc, nothing of the run is left on that host
    wait_for(lambda: "gone_after_s" in seen, 60, "the victim's processes end")
    print(f"\nsshd killed; every process of the run on that host gone {seen['gone_after_s']:.1f} s later")
    assert not run_processes(victim_base)
    assert seen["gone_after_s"] < SHORT_LEASE_S + 2 + 3  # the lease, its grace, a margin
    (workdir,) = injector_dirs(victim_base)
    assert "lease expired" in (workdir / "deadman.log").read_text()
