"""`spike replay import` from the two sources that are not files of lines: InfluxDB, a spike run."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.metrics.stack import LocalInflux
from loadorch.plan.shapes import profile_curve
from loadorch.profiles.loader import load_profile

FIXTURE_RUNS = Path(__file__).parents[1] / "fixtures" / "gatling-3.11.5"
BASE_MS = 1_790_000_000_000


def test_a_production_series_in_influxdb_becomes_a_replay(tmp_path: Path) -> None:
    if shutil.which("influxd") is None:
        pytest.fail("influxd is not installed: run `make test`, which installs it (apt-get install influxdb)")
    with LocalInflux(tmp_path / "influx") as influx:
        # requests per 10 s from a production metric: 100/s for a minute, 300/s for a minute
        lines = [f"http_requests count={1000 if i < 6 else 3000} {BASE_MS + i * 10_000}" for i in range(12)]
        request = urllib.request.Request(
            f"{influx.url}/write?db=spike&precision=ms", data="\n".join(lines).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
        result = CliRunner().invoke(
            app,
            [
                "replay",
                "import",
                "--influx-url",
                influx.url,
                "--influx-db",
                "spike",
                "--query",
                'SELECT "count" FROM "http_requests"',
                "--name",
                "prod",
                "--out",
                str(tmp_path),
            ],
        )
    assert result.exit_code == 0, result.output
    loaded = load_profile(tmp_path / "prod.yaml")
    curve = profile_curve(loaded.profile)
    assert curve.total_users == pytest.approx(6 * 1000 + 6 * 3000, rel=0.01)
    assert curve.rate_at(30) == pytest.approx(100, rel=0.05) and curve.rate_at(90) == pytest.approx(
        300, rel=0.05
    )


def test_a_recorded_spike_run_keeps_its_scenario(tmp_path: Path) -> None:
    # a run directory as spike writes it, around two real Gatling 3.11.5 logs
    run = tmp_path / "runs" / "recorded"
    profile_text = (Path(__file__).parents[2] / "loadorch/profiles/builtin/viral-x10.yaml").read_text()
    (run).mkdir(parents=True)
    (run / "profile.yaml").write_text(profile_text)
    shutil.copyfile(Path(__file__).parents[2] / "loadorch/profiles/builtin/posts.csv", run / "posts.csv")
    fixture = yaml.safe_load((FIXTURE_RUNS / "fixture.json").read_text())
    (run / "plan.json").write_text(f'{{"start_at_ms": {fixture["start_at_ms"]}}}')
    for name in ("eu-1", "us-1"):
        dest = run / "injectors" / name / "results" / "run-1"
        dest.mkdir(parents=True)
        shutil.copyfile(FIXTURE_RUNS / name / "simulation.log", dest / "simulation.log")
    result = CliRunner().invoke(
        app, ["replay", "import", str(run), "--name", "again", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((tmp_path / "out" / "again.yaml").read_text())
    original = yaml.safe_load(profile_text)
    assert [r["path"] for r in doc["scenario"]["requests"]] == [
        r["path"] for r in original["scenario"]["requests"]
    ]
    assert sum(r["weight"] for r in doc["scenario"]["requests"]) == pytest.approx(1, abs=1e-3)
    assert load_profile(tmp_path / "out" / "again.yaml").profile.shape.kind == "replay"
