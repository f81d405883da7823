"""Real runs: local Gatling injectors against the sample target on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import java_processes, spike_run, write_profile
from report_compare import compare, gatling_requests

from loadorch.errors import ExitCode
from loadorch.orchestrator import RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.local import LocalProvider
from loadorch.target.server import TargetConfig, TargetServer


class Recorder:
    def __init__(self) -> None:
        self.phases: list[str] = []
        self.views: list[Any] = []

    @property
    def ticks(self) -> int:
        return len(self.views)

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.append(name)

    def tick(self, view: Any) -> None:
        self.views.append(view)


def test_short_run_with_two_injectors(tmp_path: Path, target: TargetServer) -> None:
    profile = write_profile(tmp_path, rate_per_s=40, duration_s=15)
    recorder = Recorder()
    outcome = execute_run(
        load_profile(profile),
        provider=LocalProvider(),
        settings=RunSettings(runs_dir=tmp_path / "runs", cache_dir=build_cache_dir()),
        target=target.url,
        observer=recorder,
    )
    summary = outcome.summary
    assert outcome.exit_code == ExitCode.PASSED, summary["reason"]
    # each phase once, in order ("build" says twice when it compiles; "drain" once per agent)
    distinct = list(dict.fromkeys(recorder.phases))
    assert distinct[:7] == ["preflight", "plan", "build", "deploy", "launch", "go", "drain"], recorder.phases
    assert recorder.ticks >= 10
    # the live view follows the agents' stream: achieved requests/s near the plan's 20 per region
    # (views from before the agents' first settled second have no row data yet: a busy machine
    # can delay Gatling's first flushes, and so the stream, by several seconds)
    middle = [
        v
        for v in recorder.views
        if 2 <= v.elapsed_s <= 15 and all(r.achieved_requests_per_s for r in v.regions)
    ]
    assert len(middle) >= 3, [
        (v.elapsed_s, [r.achieved_requests_per_s for r in v.regions]) for v in recorder.views
    ]
    assert all([round(r.planned_requests_per_s) for r in v.regions] == [20, 20] for v in middle)
    for region in range(2):
        # a delayed Gatling flush can put two seconds into one: judge the median second
        achieved = sorted(v.regions[region].achieved_requests_per_s for v in middle)
        assert 15 <= achieved[len(achieved) // 2] <= 25, achieved
    assert sum(r.requests for r in recorder.views[-1].regions) >= 0.8 * 600
    # two injectors, one per region label, each completed
    assert [i["id"] for i in summary["injectors"]] == ["eu-west-2-1", "us-east-1-1"]
    assert all(i["state"] == "completed" for i in summary["injectors"])
    # achieved requests within 3% of plan
    planned = outcome.plan.planned_requests
    assert planned == 600
    assert abs(summary["requests"]["total"] - planned) / planned <= 0.03, summary["requests"]
    assert summary["requests"]["ko"] == 0
    # synchronized start: every injector began injecting at the shared instant
    assert summary["late_injectors"] == []
    assert summary["start_skew_ms"]["ready_margin_min"] > 0
    # the gates open together (spike's part, compensated); a JVM on a loaded 2-core machine can
    # still wake half a second late after its gate
    assert summary["start_skew_ms"]["first_request_offset_max"] <= 1000
    assert summary["fidelity_mape_pct"] is not None and summary["fidelity_mape_pct"] < 15
    # the run directory holds the plan, each injector's log and console, the report, the summary
    run_dir = outcome.run_dir
    assert json.loads((run_dir / "plan.json").read_text())["run_id"] == outcome.plan.run_id
    for injector in ("eu-west-2-1", "us-east-1-1"):
        assert (run_dir / "injectors" / injector / "console.log").is_file()
        assert (run_dir / "report" / f"{injector}.log").stat().st_size > 0
    assert outcome.report_path == run_dir / "report" / "index.html"
    assert json.loads((run_dir / "summary.json").read_text())["verdict"] == "passed"
    # percentiles agree with Gatling's own merged report of the same logs
    gatling = json.loads((run_dir / "report" / "js" / "stats.json").read_text())
    stats = outcome.stats
    assert stats is not None
    problems = compare("global", gatling["stats"], stats.latency)
    for name, block in gatling_requests(gatling).items():
        problems += compare(name, block, stats.by_request[name])
    assert not problems, "\n".join(problems)
    assert java_processes(str(run_dir)) == []


def test_failing_slo_exits_1(tmp_path: Path) -> None:
    slow = TargetServer(TargetConfig(port=0, capacity=64, service_time_ms=1, extra_latency_ms=30)).start()
    try:
        profile = write_profile(
            tmp_path,
            name="strict",
            rate_per_s=10,
            duration_s=5,
            slos="slos:\n  latency:\n    - {percentile: 95, max_ms: 5}\n",
        )
        result = spike_run(profile, tmp_path / "runs", "--target", slow.url, "--html-report", "off")
    finally:
        slow.stop()
    assert result.exit_code == 1, result.output
    assert "verdict: FAILED" in result.output
    assert "p95 latency of all requests <= 5 ms" in result.output
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["verdict"] == "failed" and summary["exit_code"] == 1
    assert summary["slos"][0]["actual"] >= 30


def _logged_requests(runs: Path) -> int:
    return sum(
        log.read_bytes().count(b"\nREQUEST\t") for log in runs.glob("*/injectors/*/results/*/simulation.log")
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_mid_run_leaves_no_java(tmp_path: Path, target: TargetServer, signum: int) -> None:
    profile = write_profile(tmp_path, name="long", rate_per_s=20, duration_s=60)
    runs = tmp_path / "runs"
    spike = Path(sys.executable).with_name("spike")
    proc = subprocess.Popen(
        [str(spike), "run", "--profile", str(profile), "--target", target.url, "--runs-dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(java_processes(str(runs))) < 2:
            time.sleep(0.2)
        assert len(java_processes(str(runs))) == 2, "the injectors never started"
        while time.monotonic() < deadline and _logged_requests(runs) < 40:
            time.sleep(0.1)  # until the load is flowing (a state, however busy the machine)
        assert _logged_requests(runs) >= 40, "the load never flowed"
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert java_processes(str(runs)) == [], "a Java process outlived the run"
    summary = json.loads(next(runs.glob("*/summary.json")).read_text())
    assert summary["verdict"] == "interrupted"
    assert summary["requests"]["total"] > 0, "what existed was collected"
    assert "interrupted" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "http://shop.invalid:8080"], "'shop.invalid' is not on loopback"),
        (["--target", "http://127.0.0.1:1"], "unreachable"),
        (["--provider", "mars"], "valid values: local, static, aws"),
        (["--java", "/nonexistent/java"], "Java is missing"),
    ],
)
def test_preflight_refusals_exit_2_and_create_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    profile = write_profile(tmp_path)
    result = spike_run(profile, tmp_path / "runs", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_invalid_profile_exits_2_with_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbaseline_rate_per_s: fast\n")
    result = spike_run(bad, tmp_path / "runs")
    assert result.exit_code == 2
    assert f"{bad}:2:22" in result.output
    assert not (tmp_path / "runs").exists()


class Exploding(Recorder):
    """An observer that fails once the load is flowing: an unexpected exception mid-run."""

    def tick(self, view: Any) -> None:
        super().tick(view)
        if self.ticks == 4:
            raise RuntimeError("boom")


def test_exception_mid_run_stops_every_jvm(tmp_path: Path, target: TargetServer) -> None:
    """spike's own bug mid-run: the load stops, what exists is judged, the run is recorded as aborted."""
    profile = write_profile(tmp_path, name="boom", rate_per_s=10, duration_s=60)
    runs = tmp_path / "runs"
    outcome = execute_run(
        load_profile(profile),
        provider=LocalProvider(),
        settings=RunSettings(runs_dir=runs, cache_dir=build_cache_dir(), html_report="off"),
        target=target.url,
        observer=Exploding(),
    )
    assert java_processes(str(runs)) == []
    assert outcome.exit_code == ExitCode.INFRASTRUCTURE
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert summary["verdict"] == "aborted" and summary["state"] == "finished"
    assert "RuntimeError: boom" in summary["reason"]
    assert summary["requests"]["total"] > 0, "what existed was collected"
    assert "RuntimeError: boom" in (outcome.run_dir / "spike-error.log").read_text()


def test_dead_injector_gives_a_degraded_run_naming_it(tmp_path: Path, target: TargetServer) -> None:
    profile = write_profile(tmp_path, name="dies", rate_per_s=20, duration_s=12)
    runs = tmp_path / "runs"

    class Killer(Recorder):
        def tick(self, view: Any) -> None:
            super().tick(view)
            if self.ticks == 6:  # a few seconds into the load
                (victim,) = [p for p in java_processes(str(runs)) if "us-east-1-1" in " ".join(p.cmdline())]
                victim.kill()

    outcome = execute_run(
        load_profile(profile),
        provider=LocalProvider(),
        settings=RunSettings(runs_dir=runs, cache_dir=build_cache_dir(), html_report="off"),
        target=target.url,
        observer=Killer(),
    )
    summary = outcome.summary
    assert outcome.exit_code == ExitCode.INFRASTRUCTURE
    assert summary["verdict"] == "degraded"
    dead = next(i for i in summary["injectors"] if i["id"] == "us-east-1-1")
    alive = next(i for i in summary["injectors"] if i["id"] == "eu-west-2-1")
    assert dead["state"] == "failed" and dead["exit_code"] != 0
    assert 0 < dead["delivered_share"] < 0.9
    assert alive["state"] == "completed" and alive["delivered_share"] > 0.95
    assert "us-east-1-1 (failed" in summary["reason"] and "of its plan" in summary["reason"]
    assert java_processes(str(runs)) == []


def test_relative_runs_dir_is_resolved(
    tmp_path: Path, target: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = write_profile(tmp_path, name="rel", rate_per_s=10, duration_s=3)
    monkeypatch.chdir(tmp_path)
    result = spike_run(profile, "runs", "--target", target.url, "--html-report", "off")
    assert result.exit_code == 0, result.output
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["requests"]["total"] == 30
