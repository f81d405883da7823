"""Scheduled runs end to end: the runner, its lock, JUnit, verdict, webhook and missed runs.

Most tests run a fake spike (a small script written below) that writes a
summary.json shaped like a real run's, so that verdicts and timing are under
the test's control; one test runs a real, short `spike run` through the runner.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import write_profile

from loadorch.errors import ExitCode
from loadorch.paths import build_cache_dir
from loadorch.schedule import install, runner
from loadorch.schedule.install import Schedule
from loadorch.target.server import TargetServer

FAKE_SPIKE = r'''
"""A stand-in for `python -m loadorch run ...`: writes a realistic summary.json."""
import json, os, sys, time, uuid
from pathlib import Path

args = sys.argv[1:]
def option(name, default=None):
    return args[args.index(name) + 1] if name in args else default

verdict = option("--fake-verdict", "passed")
started_flag, release_flag = option("--started-flag"), option("--release-flag")
if started_flag:
    Path(started_flag).write_text(str(os.getpid()))
if release_flag:
    deadline = time.time() + 30
    while not Path(release_flag).exists() and time.time() < deadline:
        time.sleep(0.05)
profile = option("--profile", "it")
run_id = f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
run_dir = Path(option("--runs-dir")) / run_id
run_dir.mkdir(parents=True)
slos = [
    {"name": "p95 latency of all requests <= 250 ms", "threshold": 250, "actual": 4, "passed": True},
    {"name": "p99 latency of read_feed <= 5 ms", "threshold": 5, "actual": 10,
     "passed": verdict != "failed"},
    {"name": "error rate <= 1.00%", "threshold": 0.01, "actual": 0.0, "passed": True},
]
codes = {"passed": 0, "failed": 1, "degraded": 3, "no-data": 3, "interrupted": 130}
reasons = {"passed": "every SLO met", "failed": "SLO failed: p99 latency of read_feed <= 5 ms",
           "degraded": "injector(s) did not complete: eu-west-2-1 (failed, exit 1, delivered 40% of its plan)"}
summary = {
    "run_id": run_id, "profile": profile, "provider": "local", "target": "http://127.0.0.1:1",
    "start_at_ms": int(time.time() * 1000), "duration_s": 15.0, "planned_users": 600.0,
    "requests": {"total": 600, "ok": 600, "ko": 0}, "slos": slos, "verdict": verdict,
    "reason": reasons.get(verdict, verdict), "exit_code": codes[verdict],
    "report": str(run_dir / "report" / "index.html"), "run_dir": str(run_dir),
}
(run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
print(f"fake spike: {verdict}")
sys.exit(codes[verdict])
'''


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPIKE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def fake_spike(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_spike.py"
    script.write_text(FAKE_SPIKE)
    return [sys.executable, str(script)]


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, object]]
    status = 204

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _receiver(status: int) -> Iterator[tuple[str, list[dict[str, object]]]]:
    class Receiver(_Receiver):
        pass

    Receiver.bodies = []
    Receiver.status = status
    handler = Receiver
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/t0ken", handler.bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    yield from _receiver(204)


@pytest.fixture
def broken_webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    yield from _receiver(500)


def _add(tmp_path: Path, name: str = "weekly", **overrides: object) -> Schedule:
    values: dict[str, object] = {
        "name": name,
        "cron": "0 3 * * MON",
        "spike_args": ("run", "--profile", "it"),
        "backend": "cron",
        "root": str(tmp_path / "root"),
        "workdir": str(tmp_path),
    }
    values.update(overrides)
    schedule = Schedule(**values)  # type: ignore[arg-type]
    install.add(schedule)
    return schedule


def test_run_now_runs_the_command_and_writes_junit_and_verdict(
    tmp_path: Path, home: Path, fake_spike: list[str], webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, bodies = webhook
    schedule = _add(
        tmp_path, spike_args=("run", "--profile", "it", "--fake-verdict", "failed"), notify_url=url
    )
    outcome = runner.run_now("weekly", command_prefix=fake_spike)

    assert outcome.exit_code == ExitCode.SLO_FAILED
    assert outcome.run_dir is not None
    assert outcome.run_dir.parent == schedule.results_path() / "runs"  # --runs-dir was added
    verdict = json.loads(outcome.verdict_path.read_text())
    assert outcome.verdict_path == outcome.run_dir / "verdict.json"
    assert verdict["schedule"] == "weekly"
    assert verdict["run_id"] == outcome.run_dir.name
    assert verdict["verdict"] == "failed"
    assert verdict["exit_code"] == 1
    assert verdict["reason"].startswith("SLO failed")
    assert len(verdict["slos"]) == 3
    assert verdict["report"].endswith("report/index.html")
    assert verdict["started"] <= verdict["ended"]
    assert verdict["missed"] == []
    assert verdict["webhook"] == {
        "url": "http://127.0.0.1:" + url.split(":")[2].split("/")[0] + "/...",
        "delivered": True,
        "attempts": 1,
        "error": None,
        "status": 204,
    }

    # the webhook got the verdict JSON
    assert len(bodies) == 1
    assert bodies[0]["run_id"] == verdict["run_id"]
    assert bodies[0]["verdict"] == "failed"
    assert bodies[0]["exit_code"] == 1

    suite = ET.parse(outcome.junit_path).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("name") == "spike.it"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "0")
    cases = suite.findall("testcase")
    assert len(cases) == 4
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["p99 latency of read_feed <= 5 ms", "run verdict"]
    failure = failed[0].find("failure")
    assert failure is not None and failure.get("message") == "observed 10, limit 5"
    assert suite.get("time") == "15.000"
    timestamp = suite.get("timestamp")
    assert timestamp is not None
    assert datetime.fromisoformat(timestamp)

    state = json.loads(runner.state_path("weekly").read_text())
    assert state["last_verdict"] == "failed" and state["last_exit_code"] == 1
    history = [
        json.loads(line) for line in (schedule.results_path() / "history.jsonl").read_text().splitlines()
    ]
    assert history[-1]["event"] == "run" and history[-1]["run_id"] == verdict["run_id"]


def test_degraded_run_is_a_junit_error_and_keeps_the_exit_code(
    tmp_path: Path, home: Path, fake_spike: list[str]
) -> None:
    _add(tmp_path, spike_args=("run", "--profile", "it", "--fake-verdict", "degraded"))
    outcome = runner.run_now("weekly", command_prefix=fake_spike)
    assert outcome.exit_code == ExitCode.INFRASTRUCTURE
    suite = ET.parse(outcome.junit_path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")
    error = suite.findall("testcase")[-1].find("error")
    assert error is not None and error.get("type") == "degraded"


def test_an_overlapping_run_of_the_same_schedule_is_refused(
    tmp_path: Path, home: Path, fake_spike: list[str]
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    _add(
        tmp_path,
        spike_args=("run", "--profile", "it", "--started-flag", str(started), "--release-flag", str(release)),
    )
    _add(tmp_path, name="other", cron="@daily")
    first: dict[str, runner.ScheduledRun] = {}
    thread = threading.Thread(
        target=lambda: first.update(run=runner.run_now("weekly", command_prefix=fake_spike)), daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the first run never started"

        with pytest.raises(runner.ScheduleBusyError) as info:
            runner.run_now("weekly", command_prefix=fake_spike)
        assert info.value.exit_code == ExitCode.BAD_INPUT
        assert "schedule 'weekly' is already running (lock held by pid" in info.value.message

        # a different schedule may run meanwhile
        other = runner.run_now("other", command_prefix=fake_spike)
        assert other.exit_code == 0
    finally:
        release.write_text("go")
        thread.join(timeout=30)
    assert first["run"].exit_code == 0
    # the lock is free again
    assert (
        runner.run_now("weekly", command_prefix=fake_spike, spike_argv=["run", "--profile", "it"]).exit_code
        == 0
    )
    history = (install.load("weekly").results_path() / "history.jsonl").read_text()
    assert '"event": "refused-overlap"' in history


def test_a_missed_run_is_recorded(tmp_path: Path, home: Path, fake_spike: list[str]) -> None:
    _add(tmp_path, cron="0 * * * *")
    last = datetime.now(UTC) - timedelta(hours=5)
    runner.state_path("weekly").write_text(json.dumps({"last_started": last.isoformat()}))

    outcome = runner.run_now("weekly", command_prefix=fake_spike)

    # due times in (last, now]: five hourly ones; the newest is this run's, four were missed
    missed = outcome.verdict["missed"]
    assert len(missed) == 4
    assert all(datetime.fromisoformat(m).minute == 0 for m in missed)
    assert datetime.fromisoformat(missed[0]) > last
    state = json.loads(runner.state_path("weekly").read_text())
    assert state["missed_runs"] == missed
    # the next run right after has nothing missed
    assert runner.run_now("weekly", command_prefix=fake_spike).verdict["missed"] == []


def test_a_failing_webhook_is_recorded_and_not_fatal(
    tmp_path: Path, home: Path, fake_spike: list[str], broken_webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, bodies = broken_webhook
    _add(tmp_path, notify_url=url)
    outcome = runner.run_now("weekly", command_prefix=fake_spike, retry_delay_s=0.01)
    assert outcome.exit_code == 0
    assert len(bodies) == 3  # one try and two retries
    hook = json.loads(outcome.verdict_path.read_text())["webhook"]
    assert hook["delivered"] is False and hook["attempts"] == 3
    assert hook["error"].startswith("HTTP 500")
    assert "t0ken" not in outcome.verdict_path.read_text()


def test_ad_hoc_run_without_a_stored_schedule_and_a_command_without_summary(
    tmp_path: Path, home: Path
) -> None:
    results = tmp_path / "ci-results"
    outcome = runner.run_now(
        "ci-job",
        spike_argv=["-c", "import sys; sys.exit(3)"],
        results_dir=results,
        command_prefix=[sys.executable],
    )
    assert outcome.exit_code == 3
    assert outcome.run_dir is None
    assert outcome.verdict_path.parent.parent == results
    verdict = json.loads(outcome.verdict_path.read_text())
    assert verdict["verdict"] == "aborted"  # nothing was judged: never "passed", never silent
    assert "wrote no summary.json" in verdict["reason"]
    suite = ET.parse(outcome.junit_path).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    assert not runner.state_path("ci-job").exists()  # ad hoc: no schedule state


def test_unknown_schedule_is_a_clear_error(home: Path) -> None:
    with pytest.raises(install.BadInputError, match="no schedule named 'nope'"):
        runner.run_now("nope")


def test_a_real_short_spike_run_through_the_runner(
    tmp_path: Path, home: Path, target: TargetServer, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    real_builds = build_cache_dir()  # resolved before SPIKE_HOME moved: reuse compiled simulations
    home.mkdir(parents=True)
    if real_builds.is_dir():
        (home / "gatling-builds").symlink_to(real_builds, target_is_directory=True)
    profile = write_profile(
        tmp_path,
        name="sched",
        rate_per_s=10,
        duration_s=3,
        slos="slos:\n  latency:\n    - {percentile: 95, max_ms: 2000}\n  error_rate_max: 0.01\n",
    )
    url, bodies = webhook
    _add(
        tmp_path,
        spike_args=("run", "--profile", str(profile), "--target", target.url, "--html-report", "off"),
        notify_url=url,
    )
    outcome = runner.run_now("weekly")
    verdict = json.loads(outcome.verdict_path.read_text())
    assert outcome.exit_code == 0, verdict
    assert verdict["verdict"] == "passed"
    assert outcome.run_dir is not None and (outcome.run_dir / "summary.json").exists()
    suite = ET.parse(outcome.junit_path).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("name") == "spike.sched"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    assert bodies and bodies[0]["run_id"] == outcome.run_dir.name


def test_cli_run_now_passes_spike_exit_code_through(tmp_path: Path, home: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from loadorch.cli import schedule as schedule_cli

    app = typer.Typer()
    app.add_typer(schedule_cli.app, name="schedule")

    @app.callback()
    def _root() -> None:
        pass

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nname: y\n")
    results = tmp_path / "ci"
    argv = [
        "schedule",
        "run-now",
        "ci-x",
        "--results-dir",
        str(results),
        "--",
        "profiles",
        "validate",
        str(bad),
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert "schedule ci-x: aborted (exit 2)" in result.output
    verdicts = list(results.glob("*/verdict.json"))
    assert len(verdicts) == 1 and json.loads(verdicts[0].read_text())["exit_code"] == 2


def test_a_command_that_exits_0_without_a_summary_is_not_a_pass(tmp_path: Path, home: Path) -> None:
    outcome = runner.run_now(
        "ci-zero",
        spike_argv=["-c", "pass"],
        results_dir=tmp_path / "ci-results",
        command_prefix=[sys.executable],
    )
    verdict = json.loads(outcome.verdict_path.read_text())
    assert (verdict["verdict"], outcome.exit_code) == ("aborted", 3)
