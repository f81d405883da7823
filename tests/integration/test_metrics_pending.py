"""Metrics never stranded: InfluxDB away at the end of a run, points delivered later, counts exact.

Real Gatling injectors, real agents and a real InfluxDB 1.6.7 that the tests start (and stop
under the run) themselves.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import java_processes, write_profile
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.errors import ExitCode
from loadorch.metrics.pending import pending_points
from loadorch.metrics.stack import LocalInflux, free_port, influx_query, stack_down
from loadorch.orchestrator import RunOutcome, RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.local import LocalProvider
from loadorch.target.server import TargetServer
from loadorch.telemetry import AGENT_DRAIN_TIMEOUT_S

ONE_REGION = "  - {name: eu-west-2}\n"


class StopAtGo:
    """Stops an InfluxDB as soon as the run gives the go (the injectors start their load)."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop
        self.stopped = False
        self.phases: dict[str, float] = {}

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.setdefault(name, time.monotonic())
        if name == "go" and not self.stopped:
            self.stop()
            self.stopped = True

    def tick(self, view: Any) -> None:
        return None


def run(tmp_path: Path, target: TargetServer, url: str, observer: Any = None, **profile: Any) -> RunOutcome:
    path = write_profile(tmp_path, **profile)
    return execute_run(
        load_profile(path),
        provider=LocalProvider(),
        settings=RunSettings(
            runs_dir=tmp_path / "runs",
            cache_dir=build_cache_dir(),
            html_report="off",
            influx={"url": url},
        ),
        target=target.url,
        observer=observer,
    )


def counted_in_influx(url: str, run_id: str) -> int:
    """The sum of every injector's per-second ok+ko counts of allRequests in InfluxDB."""
    query = (
        f"SELECT sum(\"count\") FROM gatling WHERE run_id='{run_id}' AND request='allRequests' "
        "AND (status='ok' OR status='ko')"
    )
    series = influx_query(url, query, db="spike")["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def pending_by_cli(runs_dir: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["metrics", "pending", "--runs-dir", str(runs_dir), "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def assert_stranded(outcome: RunOutcome, observer: StopAtGo) -> int:
    """The run ended with InfluxDB away: its summary says exactly what is pending on disk."""
    assert observer.stopped, "InfluxDB was never stopped"
    summary = outcome.summary
    assert outcome.exit_code == ExitCode.PASSED, summary["reason"]
    metrics = summary["metrics"]
    assert metrics["dropped"] == 0
    pending = metrics["pending_points"]
    assert pending > 0, "nothing pending: the outage did not bite"
    assert pending == pending_points(outcome.run_dir)
    listed = pending_by_cli(outcome.run_dir.parent)
    assert listed["points"] == pending and [r["run_id"] for r in listed["runs"]] == [outcome.plan.run_id]
    # every agent left on its own, saying how many points it left behind
    agents = metrics["agents"]
    assert {a["state"] for a in agents.values()} == {"stopped"}, agents
    spooled_at_exit = sum(a["pending_at_exit"] for a in agents.values())
    assert spooled_at_exit == metrics["left_in_spool"] > 0
    assert metrics["pending"].get("unsent-points.lp", 0) == metrics["orchestrator_points_unsent"]
    assert pending == spooled_at_exit + metrics["orchestrator_points_unsent"]
    # all agents drained at once, within one bound (one after the other: 10 s each)
    drain_s = observer.phases["teardown"] - observer.phases["drain"]
    assert drain_s < AGENT_DRAIN_TIMEOUT_S, f"the drain took {drain_s:.1f} s"
    return int(pending)


def test_points_stranded_at_the_end_of_a_run_are_delivered_by_metrics_flush(
    tmp_path: Path, target: TargetServer, influx: LocalInflux
) -> None:
    observer = StopAtGo(influx.stop)
    outcome = run(tmp_path, target, influx.url, observer, name="stranded", rate_per_s=20, duration_s=6)
    pending = assert_stranded(outcome, observer)
    runs_dir, run_id = outcome.run_dir.parent, outcome.plan.run_id

    # still down: nothing delivered, nothing lost, exit 3
    result = CliRunner().invoke(app, ["metrics", "flush", run_id, "--runs-dir", str(runs_dir)])
    assert result.exit_code == ExitCode.INFRASTRUCTURE, result.output
    assert f"{pending:,} points pending, 0 delivered" in result.output
    assert pending_points(outcome.run_dir) == pending

    result = CliRunner().invoke(app, ["metrics", "flush", "no-such-run", "--runs-dir", str(runs_dir)])
    assert result.exit_code == ExitCode.BAD_INPUT and "no-such-run" in result.output

    influx.requested = (influx.port, influx.rpc_port)  # the same port and data as before
    influx.start()
    result = CliRunner().invoke(app, ["metrics", "flush", run_id, "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    assert (
        f"{pending:,} points pending, {pending:,} delivered to {influx.url}, 0 still pending" in result.output
    )
    assert counted_in_influx(influx.url, run_id) == outcome.summary["requests"]["total"]
    assert outcome.stats is not None and outcome.summary["requests"]["total"] == outcome.stats.requests
    assert pending_points(outcome.run_dir) == 0 and pending_by_cli(runs_dir)["points"] == 0
    assert not (outcome.run_dir / "unsent-points.lp").exists()
    events = influx_query(influx.url, f"SELECT * FROM run_events WHERE run_id='{run_id}'", db="spike")
    series = events["results"][0]["series"][0]
    column = series["columns"].index("event")
    assert [row[column] for row in series["values"]] == ["start", "phase", "end", "verdict"]
    # a second flush finds nothing and says so
    result = CliRunner().invoke(app, ["metrics", "flush", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0 and "nothing pending" in result.output
    assert java_processes(str(runs_dir)) == []


def test_stack_up_delivers_what_runs_left_for_it(
    tmp_path: Path, target: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("influxd") is None:
        pytest.fail("influxd (InfluxDB 1.6.7) is missing; `make test` installs it (apt-get install influxdb)")
    monkeypatch.setenv("SPIKE_HOME", str(tmp_path / "home"))  # `spike stack` keeps its InfluxDB here
    port, rpc_port = free_port(), free_port()
    up = [
        "stack",
        "up",
        "--port",
        str(port),
        "--rpc-port",
        str(rpc_port),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        result = CliRunner().invoke(app, up)
        assert result.exit_code == 0, result.output
        assert "pending metrics: none" in result.output

        def stack_stops() -> None:
            assert CliRunner().invoke(app, ["stack", "down"]).exit_code == 0

        observer = StopAtGo(stack_stops)
        outcome = run(tmp_path, target, url, observer, name="stacked", rate_per_s=20, duration_s=5)
        pending = assert_stranded(outcome, observer)

        result = CliRunner().invoke(app, up)
        assert result.exit_code == 0, result.output
        assert (
            f"run {outcome.plan.run_id}: {pending:,} points pending, {pending:,} delivered, 0 left"
            in result.output
        )
        assert counted_in_influx(url, outcome.plan.run_id) == outcome.summary["requests"]["total"]
        assert pending_points(outcome.run_dir) == 0
        again = CliRunner().invoke(app, up)
        assert again.exit_code == 0 and "pending metrics: none" in again.output
    finally:
        stack_down(tmp_path / "home" / "stack")


def test_per_second_counts_add_up_to_the_logs_run_after_run(
    tmp_path: Path, target: TargetServer, influx: LocalInflux
) -> None:
    figures = []
    for i in range(10):
        workdir = tmp_path / f"run-{i}"
        workdir.mkdir()
        # one injector per run keeps ten runs within two minutes on a small machine
        outcome = run(
            workdir, target, influx.url, name="repeat", rate_per_s=10, duration_s=3, regions=ONE_REGION
        )
        assert outcome.exit_code == ExitCode.PASSED, outcome.summary["reason"]
        logged = outcome.summary["requests"]["total"]
        metrics = outcome.summary["metrics"]
        figures.append(
            (logged, counted_in_influx(influx.url, outcome.plan.run_id), metrics["pending_points"])
        )
    print(f"\n(log requests, InfluxDB requests, pending) per run: {figures}")
    assert all(logged == stored > 0 and pending == 0 for logged, stored, pending in figures), figures
