"""Live metrics for real: runs against a real InfluxDB 1.6.7 that the tests start themselves."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import java_processes, spike_run, write_profile

from loadorch.dashboards.build import LIVE_RUN, RUNS, dashboard_json, panel_queries
from loadorch.errors import ExitCode
from loadorch.metrics.stack import LocalInflux
from loadorch.orchestrator import RunOutcome, RunSettings, execute_run
from loadorch.paths import build_cache_dir
from loadorch.profiles.loader import load_profile
from loadorch.providers.local import LocalProvider
from loadorch.target.server import TargetServer


def rows(influx: LocalInflux, query: str) -> list[dict[str, Any]]:
    """Every row of every series, as dicts with the series' tags merged in."""
    result = influx.query(query, db="spike")["results"][0]
    assert "error" not in result, f"{query}: {result['error']}"
    out = []
    for series in result.get("series", []):
        for values in series["values"]:
            out.append({**series.get("tags", {}), **dict(zip(series["columns"], values, strict=True))})
    return out


def run_with_influx(
    tmp_path: Path, target: TargetServer, influx: LocalInflux, observer: Any = None, **profile: Any
) -> RunOutcome:
    path = write_profile(tmp_path, **profile)
    return execute_run(
        load_profile(path),
        provider=LocalProvider(),
        settings=RunSettings(
            runs_dir=tmp_path / "runs",
            cache_dir=build_cache_dir(),
            html_report="off",
            influx={"url": influx.url},
        ),
        target=target.url,
        observer=observer,
    )


def test_every_second_of_every_injector_lands_and_counts_match_the_logs(
    tmp_path: Path, target: TargetServer, influx: LocalInflux
) -> None:
    outcome = run_with_influx(
        tmp_path, target, influx, name="live", rate_per_s=30, duration_s=15, missing_post_weight=0.2
    )
    summary = outcome.summary
    run_id = outcome.plan.run_id
    assert outcome.exit_code == ExitCode.PASSED, summary["reason"]
    assert summary["metrics"]["dropped"] == 0
    assert summary["metrics"]["points_written"] > 0
    # the sum of per-second ok+ko counts equals the merged logs' request count, exactly
    counted = rows(
        influx,
        f"SELECT sum(\"count\") FROM gatling WHERE run_id='{run_id}' AND request='allRequests' "
        "AND (status='ok' OR status='ko')",
    )
    assert counted[0]["sum"] == summary["requests"]["total"] == outcome.stats.requests  # type: ignore[union-attr]
    # per-second points for every injector and every region
    per_second = rows(
        influx,
        f"SELECT count(\"count\") FROM gatling WHERE run_id='{run_id}' AND request='allRequests' AND status='all' "
        "GROUP BY injector, region",
    )
    assert {(r["injector"], r["region"]) for r in per_second} == {
        ("eu-west-2-1", "eu-west-2"),
        ("us-east-1-1", "us-east-1"),
    }
    assert all(r["count"] >= 14 for r in per_second), per_second
    health = rows(
        influx, f"SELECT count(cpu_pct) FROM injector_health WHERE run_id='{run_id}' GROUP BY injector"
    )
    assert len(health) == 2 and all(r["count"] >= 10 for r in health)
    planned = rows(
        influx, f"SELECT count(users_per_s) FROM planned_rate WHERE run_id='{run_id}' GROUP BY region"
    )
    assert sorted(r["count"] for r in planned) == [16, 16]
    events = [r["event"] for r in rows(influx, f"SELECT * FROM run_events WHERE run_id='{run_id}'")]
    assert events == ["start", "phase", "end", "verdict"]
    errors = rows(influx, f"SELECT ko FROM run_summary WHERE run_id='{run_id}' AND scope='error'")
    assert [e["ko"] for e in errors] == [e["count"] for e in summary["errors"]] and errors
    final = rows(influx, f"SELECT * FROM run_summary WHERE run_id='{run_id}' AND scope='global'")
    assert final[0]["requests"] == summary["requests"]["total"]
    assert final[0]["p95"] == summary["latency"]["all"]["p95"]

    # every dashboard panel's query, run against this InfluxDB, returns data
    start_ms = outcome.plan.start_at_ms - 5_000
    end_ms = outcome.plan.start_at_ms + 60_000
    live = dashboard_json(LIVE_RUN, "influxql")
    variables = {
        "run_id": run_id,
        "region": ["eu-west-2", "us-east-1"],
        "request": ["read_feed", "read_post"],
        "status": "all",
    }
    runs = dashboard_json(RUNS, "influxql")
    queries = panel_queries(live, variables, start_ms, end_ms) + panel_queries(
        runs, {"run_a": run_id, "run_b": run_id}, start_ms - 86_400_000, end_ms
    )
    assert len(queries) >= 12
    empty = [title for title, query in queries if not rows(influx, query)]
    assert not empty, f"panels without data: {empty}"


@pytest.mark.parametrize("mode", ["stopped", "frozen"])
def test_influx_outage_mid_run_loses_nothing(
    tmp_path: Path, target: TargetServer, influx: LocalInflux, mode: str
) -> None:
    class Outage:
        """InfluxDB goes away 3 s into the load for 20 s: stopped (then started again on the same port
        and data), or frozen with SIGSTOP (it accepts connections and answers nothing), then resumed."""

        def __init__(self) -> None:
            self.ticks = 0
            self.down_at = 0

        def phase(self, name: str, detail: str = "") -> None:
            return None

        def tick(self, view: Any) -> None:
            self.ticks += 1
            if self.ticks == 5:
                if mode == "stopped":
                    influx.stop()
                else:
                    assert influx.process is not None
                    os.kill(influx.process.pid, signal.SIGSTOP)
                self.down_at = self.ticks
            if self.down_at and self.ticks == self.down_at + 20:
                if mode == "stopped":
                    influx.requested = (influx.port, influx.rpc_port)
                    influx.start()
                else:
                    assert influx.process is not None
                    os.kill(influx.process.pid, signal.SIGCONT)

    outage = Outage()
    outcome = run_with_influx(
        tmp_path, target, influx, observer=outage, name="outage", rate_per_s=20, duration_s=30
    )
    assert outage.down_at, "the outage never happened"
    summary = outcome.summary
    assert outcome.exit_code == ExitCode.PASSED, summary["reason"]
    metrics = summary["metrics"]
    assert metrics["spooled"] > 0, "nothing was spooled: the outage did not bite"
    assert metrics["dropped"] == 0
    assert metrics["left_in_spool"] == 0
    counted = rows(
        influx,
        f"SELECT sum(\"count\") FROM gatling WHERE run_id='{outcome.plan.run_id}' AND request='allRequests' "
        "AND (status='ok' OR status='ko')",
    )
    assert counted[0]["sum"] == summary["requests"]["total"]
    assert java_processes(str(tmp_path / "runs")) == []


def test_unreachable_influx_stops_before_any_injector(tmp_path: Path, target: TargetServer) -> None:
    profile = write_profile(tmp_path)
    result = spike_run(
        profile, tmp_path / "runs", "--target", target.url, "--influx-url", "http://127.0.0.1:1"
    )
    assert result.exit_code == 2, result.output
    assert "InfluxDB is unreachable" in result.output and "spike stack up" in result.output
    assert not (tmp_path / "runs").exists()


def test_wrong_password_stops_before_any_injector_and_is_not_printed(
    tmp_path: Path, target: TargetServer
) -> None:
    secured = LocalInflux(tmp_path / "secured", auth_enabled=True).start()
    try:
        secured.query("CREATE USER admin WITH PASSWORD 'right-one' WITH ALL PRIVILEGES")
        secured.query('CREATE DATABASE "spike"', username="admin", password="right-one")
        profile = write_profile(tmp_path)
        result = spike_run(
            profile,
            tmp_path / "runs",
            "--target",
            target.url,
            "--influx-url",
            secured.url,
            "--influx-user",
            "admin",
            env={"SPIKE_INFLUX_PASSWORD": "wrong-secret-42"},
        )
    finally:
        secured.stop()
    assert result.exit_code == 2, result.output
    assert "SPIKE_INFLUX_PASSWORD" in result.output
    assert "wrong-secret-42" not in result.output
    assert not (tmp_path / "runs").exists()


def test_summary_json_reports_the_metrics(tmp_path: Path, target: TargetServer, influx: LocalInflux) -> None:
    outcome = run_with_influx(tmp_path, target, influx, name="counters", rate_per_s=10, duration_s=4)
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert set(summary["metrics"]["agents"]) == {"eu-west-2-1", "us-east-1-1"}
    assert summary["metrics"]["orchestrator_points_unsent"] == 0


def test_run_with_grafana_adds_start_and_end_annotations(tmp_path: Path, target: TargetServer) -> None:
    """Contract test: Grafana cannot run here; the fake speaks its documented annotations API."""
    from fake_grafana import FakeGrafana

    profile = write_profile(tmp_path, name="annotated", rate_per_s=10, duration_s=3)
    with FakeGrafana({"editor-key-123": "Editor"}) as grafana:
        result = spike_run(
            profile,
            tmp_path / "runs",
            "--target",
            target.url,
            "--html-report",
            "off",
            "--grafana-url",
            grafana.url,
            env={"SPIKE_GRAFANA_KEY": "editor-key-123"},
        )
        annotations = list(grafana.state.annotations)
    assert result.exit_code == 0, result.output
    run_id = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())["run_id"]
    assert len(annotations) == 2
    assert all(f"run_id:{run_id}" in a["tags"] for a in annotations)
    assert "starts" in annotations[0]["text"] and "passed" in annotations[1]["text"]
    assert "editor-key-123" not in result.output


def test_v2_write_path_end_to_end(tmp_path: Path, target: TargetServer) -> None:
    """The same run's points through the v2 API (influxdb-client) into a real /api/v2/write server.

    Debian's VictoriaMetrics implements /api/v2/write; it names series <measurement>_<field>
    and keeps tags as labels.
    """
    from loadorch.metrics.testing_servers import LocalVictoriaMetrics

    if shutil.which("victoria-metrics") is None:
        pytest.fail("victoria-metrics is missing; `make test` installs it (apt-get install victoria-metrics)")
    with LocalVictoriaMetrics(tmp_path / "vm") as vm:
        path = write_profile(tmp_path, name="v2", rate_per_s=10, duration_s=6)
        outcome = execute_run(
            load_profile(path),
            provider=LocalProvider(),
            settings=RunSettings(
                runs_dir=tmp_path / "runs",
                cache_dir=build_cache_dir(),
                html_report="off",
                influx={"url": vm.url, "api": "v2", "org": "spike", "bucket": "spike"},
            ),
            target=target.url,
        )
        run_id = outcome.plan.run_id
        series = vm.export(
            f'gatling_count{{run_id="{run_id}",request="allRequests",status=~"ok|ko"}}',
            expect_series=2,
            timeout_s=10,
        )
        planned = vm.export(f'planned_rate_users_per_s{{run_id="{run_id}"}}', expect_series=2)
    assert outcome.summary["metrics"]["dropped"] == 0
    assert {s["metric"]["injector"] for s in series} == {"eu-west-2-1", "us-east-1-1"}
    assert sum(sum(s["values"]) for s in series) == outcome.summary["requests"]["total"] == 60
    assert len(planned) == 2
