"""Helpers of the fault tier: spike as a subprocess, states to wait for, what a run left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

SPIKE = Path(sys.executable).with_name("spike")
LEAD_IN_S = 3


def profile(
    directory: Path, *, name: str, rate_per_s: float, duration_s: int, extra_request: str = ""
) -> Path:
    """A one-region steps profile at a constant rate, one request per user, p95 and error-rate SLOs.

    The rate comes after a quiet lead-in (LEAD_IN_S at half a user a second, where the validity
    gates do not judge): on a machine as busy as the suite makes it, a cold Gatling can start
    injecting seconds after the shared start, which the stall gate rightly calls invalid, and
    these tests are about the fault, not the start (issue 11's).
    """
    path = directory / f"{name}.yaml"
    path.write_text(
        f"""\
name: {name}
target: {{base_url: "http://127.0.0.1:1"}}
baseline_rate_per_s: {rate_per_s}
shape:
  kind: steps
  steps: [{{duration_s: {LEAD_IN_S}, rate_per_s: 0.5}}, {{duration_s: {duration_s}, rate_per_s: {rate_per_s}}}]
scenario:
  requests:
    - {{name: read_feed{extra_request}, path: "/feed?page=1"}}
regions: [{{name: eu-west-2}}]
slos:
  error_rate_max: 0.01
  latency: [{{percentile: 95, max_ms: 1000}}]
"""
    )
    return path


def processes_of(marker: str) -> list[psutil.Process]:
    """Processes (JVMs, agents) whose command line names `marker` (a run directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 120.0) -> Any:
    """Poll `condition` until it is truthy (the state a test waits for); fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def journal_phases(runs: Path) -> list[str]:
    phases: list[str] = []
    for journal in runs.glob("*/journal.jsonl"):
        for line in journal.read_text().splitlines():
            try:
                phases.append(json.loads(line)["phase"])
            except (ValueError, KeyError):
                continue
    return phases


def logged_requests(runs: Path) -> int:
    """Whole REQUEST records Gatling has written so far (the load is flowing when this grows).

    Gatling's buffered writer flushes at any byte, so a log read mid-run can end inside a record:
    only the records up to the last newline are counted, as the analysis counts them.
    """
    total = 0
    for log in runs.glob("*/injectors/*/results/*/simulation.log"):
        try:
            data = log.read_bytes()
        except OSError:
            continue
        total += data[: data.rfind(b"\n") + 1].count(b"\nREQUEST\t")
    return total


def start_spike(profile_path: Path, runs: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SPIKE), "run", "--profile", str(profile_path), "--runs-dir", str(runs), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,  # a signal from the test reaches spike alone, as `kill` would
    )


def finish(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return output


def summary_of(runs: Path) -> dict[str, Any]:
    (path,) = list(runs.glob("*/summary.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def history_entry(run_id: str) -> Any:
    from loadorch.history.registry import default_db_path, get_run

    return get_run(run_id, db=default_db_path())
