"""The fault matrix on the local provider: each fault ends in a recorded, truthful verdict."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from faultkit import (
    SPIKE,
    finish,
    history_entry,
    journal_phases,
    logged_requests,
    processes_of,
    profile,
    start_spike,
    summary_of,
    wait_for,
)

from loadorch.target.server import TargetConfig, TargetServer


def _assert_recorded(runs: Path, verdict: str, exit_code: int) -> dict:
    summary = summary_of(runs)
    assert summary["verdict"] == verdict, summary["reason"]
    assert summary["exit_code"] == exit_code
    assert summary["state"] == "finished"
    assert journal_phases(runs)[-1] == "finished"
    record = history_entry(summary["run_id"])
    assert (record.verdict, record.exit_code) == (verdict, exit_code)
    assert processes_of(str(runs)) == [], "a process of the run outlived it"
    return summary


def test_ctrl_c_during_build(tmp_path: Path, target: TargetServer) -> None:
    # a request name no other test uses: its simulation is not in the build cache, so Maven compiles
    unique = f"_{time.time_ns()}"
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="build", rate_per_s=5, duration_s=30, extra_request=unique),
        runs,
        "--target",
        target.url,
    )
    wait_for(lambda: "planned" in journal_phases(runs), "the run to be planned")
    proc.send_signal(signal.SIGINT)
    output = finish(proc)
    assert proc.returncode == 130, output
    summary = _assert_recorded(runs, "interrupted", 130)
    assert "built" not in journal_phases(runs)
    assert summary["injectors"] == [] and "requests" not in summary, "nothing ran, nothing is claimed"


def test_ctrl_c_during_jvm_boot(tmp_path: Path, target: TargetServer) -> None:
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="boot", rate_per_s=5, duration_s=30), runs, "--target", target.url
    )
    wait_for(lambda: "launched" in journal_phases(runs), "the injectors to be launched")
    proc.send_signal(signal.SIGINT)
    output = finish(proc)
    assert proc.returncode == 130, output
    _assert_recorded(runs, "interrupted", 130)


@pytest.mark.parametrize(
    "signals",
    [[signal.SIGINT], [signal.SIGTERM], [signal.SIGHUP], [signal.SIGINT, signal.SIGINT]],
    ids=["ctrl-c", "sigterm", "sighup", "ctrl-c-twice"],
)
def test_signal_mid_load(tmp_path: Path, target: TargetServer, signals: list[signal.Signals]) -> None:
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="mid", rate_per_s=20, duration_s=60), runs, "--target", target.url
    )
    wait_for(lambda: logged_requests(runs) >= 40, "the load to flow")
    for sig in signals:
        proc.send_signal(sig)
    output = finish(proc)
    assert proc.returncode == 130, output
    summary = _assert_recorded(runs, "interrupted", 130)
    assert summary["requests"]["total"] >= 40, "what existed was collected"
    assert [g for g in summary["gates"] if g["invalidates"]] == [], (
        "an interrupted run is not blamed on its injectors"
    )


def test_sigkill_of_spike_is_recovered_as_aborted(tmp_path: Path, target: TargetServer) -> None:
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="killed", rate_per_s=20, duration_s=60), runs, "--target", target.url
    )
    wait_for(lambda: logged_requests(runs) >= 40, "the load to flow")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    # the injectors and agents die with spike (the kernel's parent-death signal)
    wait_for(lambda: processes_of(str(runs)) == [], "the run's processes to end with spike", 30)
    listing = subprocess.run(
        [str(SPIKE), "runs", "--runs-dir", str(runs)], capture_output=True, text=True, check=True
    )
    assert "unfinished" in listing.stdout
    recovered = subprocess.run(
        [str(SPIKE), "runs", "recover", "--runs-dir", str(runs)], capture_output=True, text=True, timeout=120
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "recovered run" in recovered.stdout and "verdict aborted" in recovered.stdout
    summary = _assert_recorded(runs, "aborted", 3)
    assert summary["requests"]["total"] >= 40
    # the load flowed, so the journal's last phase before the kill is the go (nothing is journaled mid-load)
    assert "died during 'go'" in summary["reason"], summary["reason"]
    again = subprocess.run(
        [str(SPIKE), "runs", "--runs-dir", str(runs)], capture_output=True, text=True, check=True
    )
    assert "unfinished" not in again.stdout


def test_stalled_injector_is_invalid_never_passed(tmp_path: Path, target: TargetServer) -> None:
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="stall", rate_per_s=20, duration_s=25),
        runs,
        "--target",
        target.url,
        "--html-report",
        "off",
    )
    wait_for(lambda: logged_requests(runs) >= 60, "the load to flow")
    (jvm,) = [p for p in processes_of(str(runs)) if "java" in (p.name() or "")]
    jvm.suspend()  # SIGSTOP: the injector stalls
    try:
        stalled_at = time.monotonic()
        wait_for(lambda: time.monotonic() - stalled_at >= 10, "ten seconds of stall", 20)
    finally:
        jvm.resume()
    output = finish(proc)
    assert proc.returncode == 3, output
    summary = _assert_recorded(runs, "invalid", 3)
    stall = next(g for g in summary["gates"] if g["gate"] == "stall")
    assert stall["where"] == "eu-west-2-1" and len(stall["seconds"]) >= 8
    assert "not a valid measurement" in summary["reason"] and "eu-west-2-1" in summary["reason"]
    assert "INVALID" in output


def test_target_killed_mid_run_fails_the_slo_and_blames_no_injector(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    server = TargetServer(TargetConfig(port=0)).start()
    proc = start_spike(
        profile(tmp_path, name="down", rate_per_s=20, duration_s=15),
        runs,
        "--target",
        server.url,
        "--html-report",
        "off",
    )
    try:
        wait_for(lambda: logged_requests(runs) >= 60, "the load to flow")
    finally:
        server.stop()
    output = finish(proc)
    assert proc.returncode == 1, output
    summary = _assert_recorded(runs, "failed", 1)
    assert all(i["state"] == "completed" for i in summary["injectors"]), summary["injectors"]
    assert "error rate" in summary["reason"]
    assert any("onnection refused" in e["message"] for e in summary["errors"]), summary["errors"]
    assert "onnection refused" in output, "the errors by message are on the terminal"


def test_full_disk_mid_run_stops_the_load_and_exits_3(tmp_path: Path, target: TargetServer) -> None:
    """The runs directory's disk fills up mid-run: the load stops, the summary is written, exit 3."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        runs = mount / "runs"
        proc = start_spike(
            profile(tmp_path, name="full", rate_per_s=20, duration_s=60),
            runs,
            "--target",
            target.url,
            "--html-report",
            "off",
        )
        wait_for(lambda: logged_requests(runs) >= 40, "the load to flow")
        free = shutil.disk_usage(mount).free
        with (mount / "filler").open("wb") as handle:  # leave 8 MiB: below what spike keeps free
            handle.truncate(0)
            os.posix_fallocate(handle.fileno(), 0, free - (8 << 20))
        output = finish(proc)
        assert proc.returncode == 3, output
        (mount / "filler").unlink()
        summary = _assert_recorded(runs, "aborted", 3)
        assert summary["reason"].startswith("disk full:"), summary["reason"]
        assert summary["requests"]["total"] >= 40, "what was written is kept and judged"
        assert "Traceback" not in output
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_sigkill_during_the_html_report(tmp_path: Path, target: TargetServer) -> None:
    """spike dies while Gatling writes the merged report: the JVM dies with it; recovery finishes the run."""
    runs = tmp_path / "runs"
    proc = start_spike(
        profile(tmp_path, name="report", rate_per_s=40, duration_s=6), runs, "--target", target.url
    )

    def report_jvm() -> list[psutil.Process]:
        return [p for p in processes_of(str(runs)) if "-ro" in p.cmdline()]

    (jvm,) = wait_for(report_jvm, "Gatling's reports-only JVM to start")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    wait_for(
        lambda: not jvm.is_running() or jvm.status() == psutil.STATUS_ZOMBIE,
        "the report JVM to die with spike",
        30,
    )
    judged = summary_of(runs)
    assert judged["state"] == "judged" and judged["report_state"] == "building"
    recovered = subprocess.run(
        [str(SPIKE), "runs", "recover", "--runs-dir", str(runs)], capture_output=True, text=True, timeout=120
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    summary = summary_of(runs)
    # the verdict was final before spike died: it stands; the report is marked as not built
    assert (summary["state"], summary["verdict"]) == ("finished", judged["verdict"])
    assert summary["report_state"].startswith("failed (spike died")
    assert history_entry(summary["run_id"]).verdict == judged["verdict"]
    assert processes_of(str(runs)) == []
