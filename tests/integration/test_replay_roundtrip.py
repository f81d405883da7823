"""A recorded spike, replayed for real: record a run's access log, import it, run the replay.

The sample target writes a combined-format access log (as nginx would) while a real run storms
it; `spike replay import` turns the log into a profile; a real run of that profile follows the
recording (correlation >= 0.98, MAPE <= 5 % wherever the recording is at least 50 users/s) and
keeps its request mix (each template within 2 percentage points).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import spike_run, write_profile
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.errors import ExitCode
from loadorch.target.server import TargetConfig, TargetServer

# ramps of 10 s: a second's arrivals on a ramp depend on where the second starts, and neither the
# recording (whole-second log times) nor the run can place that closer than a fraction of a second
STORM = """  steps:
    - {duration_s: 8, rate_per_s: 40}
    - {duration_s: 10, rate_per_s: 160, ramp: true}
    - {duration_s: 15, rate_per_s: 160}
    - {duration_s: 10, rate_per_s: 40, ramp: true}"""


def roomy(access_log: Path | None = None) -> TargetServer:
    config = TargetConfig(
        port=0,
        capacity=512,
        service_time_ms=1,
        queue_timeout_ms=2000,
        access_log=str(access_log) if access_log else None,
    )
    return TargetServer(config).start()


def test_record_import_and_replay_a_spike(tmp_path: Path) -> None:
    # 1. record: a real storm against the sample target, which logs every request
    access_log = tmp_path / "access.log"
    profile = write_profile(tmp_path, name="recorded", rate_per_s=40, duration_s=30)  # steps replaced below
    profile.write_text(profile.read_text().replace("  steps:\n    - {duration_s: 30, rate_per_s: 40}", STORM))
    target = roomy(access_log)
    try:
        recorded = spike_run(profile, tmp_path / "runs", "--target", target.url, "--html-report", "off")
    finally:
        target.stop()
    assert recorded.exit_code == ExitCode.PASSED, recorded.output

    # 2. import the log as a replay profile
    out = tmp_path / "replay"
    imported = CliRunner().invoke(
        app,
        [
            "replay",
            "import",
            str(access_log),
            "--name",
            "storm",
            "--out",
            str(out),
            "--max-rate-per-injector",
            "1000",
        ],
    )
    assert imported.exit_code == 0, imported.output
    doc = yaml.safe_load((out / "storm.yaml").read_text())
    assert doc["shape"]["kind"] == "replay"
    segments = len((out / "storm-curve.csv").read_text().splitlines()) - 1
    assert segments <= 20  # a compact curve, not a point per second (a busy machine records more noise)
    shares = {r["path"]: r["weight"] for r in doc["scenario"]["requests"]}
    assert set(shares) >= {"/feed?page={page}", "/posts/{post_id}"}
    shown = CliRunner().invoke(app, ["replay", "show", str(out / "storm.yaml")])
    assert shown.exit_code == 0 and "correlation" in shown.output, shown.output

    # 3. replay it for real against a fresh target
    target = roomy()
    try:
        replayed = spike_run(
            out / "storm.yaml", tmp_path / "runs", "--target", target.url, "--html-report", "off"
        )
    finally:
        target.stop()
    assert replayed.exit_code == ExitCode.PASSED, replayed.output
    run_dir = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    fidelity = summary["replay_fidelity"]
    assert fidelity["correlation"] >= 0.98, fidelity
    assert fidelity["mape_pct"] <= 5.0 and fidelity["seconds_in_mape"] >= 10, fidelity
    total = summary["requests"]["total"]
    by_path = {r["path"]: r["name"] for r in doc["scenario"]["requests"]}
    for path, share in shares.items():
        # a template of a few requests (the recording's warm-up GET /) may get none in a replay
        got = summary["by_request"].get(by_path[path], {"all": {"count": 0}})["all"]["count"] / total
        assert abs(got - share) <= 0.02, (path, got, share)


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("", [], "the recording is empty"),
        ("this is not a log\nnor is this\n", [], "unknown recording format"),
        ("this is not a log\nnor is this\n", ["--format", "combined"], "no line could be parsed"),
        (
            '127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 5 "-" "-"\n',
            ["--format", "xml"],
            "xml",
        ),
        (
            '127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 5 "-" "-"\n',
            ["--window", "2030-01-01T00:00:00Z..2030-01-02T00:00:00Z"],
            "no requests were recorded",
        ),
        ("timestamp,count\n1700000010,5\n1700000000,5\n", [], "recording.log:3: row is out of time order"),
    ],
)
def test_bad_recordings_are_refused_clearly(
    tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    source = tmp_path / "recording.log"
    source.write_text(content)
    result = CliRunner().invoke(
        app, ["replay", "import", str(source), "--name", "bad", "--out", str(tmp_path), *args]
    )
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert message in result.output.lower(), result.output
    assert not (tmp_path / "bad.yaml").exists()
