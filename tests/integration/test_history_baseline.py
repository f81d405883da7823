"""Run history and `--baseline`, on real runs: a deliberately slowed target is a regression."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import spike_run, write_profile
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.errors import ExitCode
from loadorch.target.server import TargetConfig, TargetServer


def test_a_slowed_target_fails_against_the_last_passing_run_and_names_the_requests(
    tmp_path: Path, target: TargetServer
) -> None:
    db = tmp_path / "history.sqlite"
    env = {"SPIKE_HISTORY_DB": str(db)}
    # 80 users/s for 10 s: read_post (a quarter) has ~200 samples, well over the comparison's minimum of 100
    profile = write_profile(tmp_path, name="hist", rate_per_s=80, duration_s=10)
    first = spike_run(profile, tmp_path / "runs", "--target", target.url, "--html-report", "off", env=env)
    assert first.exit_code == ExitCode.PASSED, first.output
    assert "no baseline" not in first.output  # no --baseline: nothing compared

    slow = TargetServer(
        TargetConfig(port=0, capacity=256, service_time_ms=1, queue_timeout_ms=2000, extra_latency_ms=60)
    ).start()
    try:
        second = spike_run(
            profile,
            tmp_path / "runs",
            "--target",
            slow.url,
            "--html-report",
            "off",
            "--baseline",
            "last-passing",
            env=env,
        )
    finally:
        slow.stop()
    assert second.exit_code == ExitCode.SLO_FAILED, second.output
    assert "regressed" in second.output and "read_feed" in second.output and "read_post" in second.output
    run_dirs = sorted((tmp_path / "runs").iterdir())
    summary = json.loads((run_dirs[-1] / "summary.json").read_text())
    assert summary["verdict"] == "failed"
    assert sorted(summary["regression"]["regressed_requests"]) == ["read_feed", "read_post"]
    assert summary["regression"]["baseline_run_id"] == run_dirs[0].name

    # both runs are in the history, and `spike compare` says the same
    listed = CliRunner().invoke(app, ["history", "--profile", "hist", "--json", "--db", str(db)])
    assert listed.exit_code == 0, listed.output
    assert {r["run_id"] for r in json.loads(listed.output)} == {d.name for d in run_dirs}
    compared = CliRunner().invoke(app, ["compare", run_dirs[0].name, run_dirs[1].name, "--db", str(db)])
    assert compared.exit_code == 1, compared.output
    assert "read_feed" in compared.output
