"""The target's failures are the target's: a hung or slow target fails its SLOs, and no injector is blamed.

A stop criterion ends a storm against a target that is already down (aborted, exit 1), and the
spike SLOs are still computed from what ran.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from faultkit import SPIKE, finish, logged_requests, processes_of, profile, start_spike, summary_of, wait_for

from loadorch.errors import ExitCode
from loadorch.orchestrator import RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.local import LocalProvider
from loadorch.target.server import TargetConfig, TargetServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(port: int) -> subprocess.Popen[bytes]:
    """The sample target as its own process, so that the test can freeze it (SIGSTOP)."""
    proc = subprocess.Popen(
        [str(SPIKE), "target", "serve", "--port", str(port), "--capacity", "256", "--service-time-ms", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(answers, "the sample target to listen", 30)
    return proc


def test_hung_target_fails_without_blaming_injectors(tmp_path: Path) -> None:
    """Frozen mid-run: its users wait for answers past the plan; spike stops them and says so."""
    port = _free_port()
    server = _serve(port)
    runs = tmp_path / "runs"

    class FreezeOnceLoaded:
        def phase(self, name: str, detail: str = "") -> None:
            return None

        def tick(self, view: object) -> None:
            if logged_requests(runs) >= 40 and server.poll() is None:
                os.kill(server.pid, signal.SIGSTOP)

    try:
        outcome = execute_run(
            load_profile(profile(tmp_path, name="hung", rate_per_s=20, duration_s=8)),
            provider=LocalProvider(),
            settings=RunSettings(runs_dir=runs, cache_dir=build_cache_dir(), html_report="off", overrun_s=3),
            target=f"http://127.0.0.1:{port}",
            observer=FreezeOnceLoaded(),
        )
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    result = outcome.result
    assert outcome.exit_code == ExitCode.SLO_FAILED, result.reason
    assert "every request answered" in result.reason
    assert all(i.state == "completed" for i in result.injectors), result.injectors
    assert processes_of(str(runs)) == []


def test_slow_target_fails_its_latency_slo(tmp_path: Path) -> None:
    server = TargetServer(
        TargetConfig(port=0, capacity=256, service_time_ms=1, extra_latency_ms=1200)
    ).start()
    try:
        outcome = execute_run(
            load_profile(profile(tmp_path, name="slow", rate_per_s=10, duration_s=6)),
            provider=LocalProvider(),
            settings=RunSettings(runs_dir=tmp_path / "runs", cache_dir=build_cache_dir(), html_report="off"),
            target=server.url,
        )
    finally:
        server.stop()
    result = outcome.result
    assert outcome.exit_code == ExitCode.SLO_FAILED, result.reason
    assert "p95 latency of all requests <= 1000 ms" in result.reason
    assert all(i.state == "completed" for i in result.injectors)
    assert [g for g in result.gates if g.invalidates] == []  # a busy host may add a saturation warning


def test_stop_criterion_ends_the_storm_against_a_down_target(tmp_path: Path) -> None:
    """The target dies; `--abort-when` stops the load within seconds instead of at the plan's end."""
    server = TargetServer(TargetConfig(port=0, capacity=256, service_time_ms=1)).start()
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="abort", rate_per_s=20, duration_s=120),
        runs,
        "--target",
        server.url,
        "--html-report",
        "off",
        "--abort-when",
        "error-rate>50% for 3s",
    )
    try:
        wait_for(lambda: logged_requests(runs) >= 60, "the load to flow")
    finally:
        server.stop()
    output = finish(proc, timeout_s=90)  # far less than the plan's 120 s
    assert proc.returncode == 1, output
    summary = summary_of(runs)
    assert summary["verdict"] == "aborted" and summary["exit_code"] == 1
    assert summary["abort_criterion"].startswith("error rate above 50% for 3 s")
    assert summary["reason"].startswith("load stopped early: error rate above 50% for 3 s")
    assert summary["spike_slos"]["peak_second"] is not None, "the spike SLOs are computed from what ran"
    assert all(i["state"] == "completed" or i["delivered_share"] < 1 for i in summary["injectors"])
    assert [g for g in summary["gates"] if g["invalidates"]] == [], "an early stop is not a stall"
    assert processes_of(str(runs)) == []
