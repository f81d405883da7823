"""Full disks for real: a small tmpfs filled up, and a real Gatling 3.11.5 injector writing onto one.

How the console fixtures were produced (December 2026, Gatling 3.11.5, `spike target serve` on
127.0.0.1): one injector of a steps profile (100 users/s for 60 s, 2 requests per user, requests
read_feed, read_post, like_post and missing_page) built with `injector_command` and run with
`-rf` on a tmpfs (`mount -t tmpfs -o size=...`), stdout and stderr to a console file:

- tests/fixtures/gatling_enospc_console.txt: results on a 256 KiB tmpfs, the console elsewhere.
  Lines 1-3, 39-147 and 282-303 of the console: the writer failed 15 s into the run; Gatling
  injected all 6,000 users to the end and exited 0, simulation.log cut at 262,144 bytes.
- tests/fixtures/gatling_enospc_samefs_console.txt: the console on the same 256 KiB tmpfs as
  the results (as for a local injector): the whole file, 4,096 bytes, cut inside the stack trace.
- tests/fixtures/gatling_enospc_init_console.txt: the whole console of a 6 s run (20 users/s)
  whose results tmpfs had no free inode left: the results directory could not be created; the
  JVM injected anyway and exited 1 after the run.

Every tmpfs is unmounted in a `finally`; the tests skip (saying why) where mounting is not allowed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import write_profile

from loadorch.curve import RateCurve
from loadorch.diskspace import DiskWatch, check_disk, estimate_run_disk, gatling_write_failure
from loadorch.engine.gatling.build import compile_simulation
from loadorch.engine.gatling.command import injector_command
from loadorch.engine.gatling.render import render_simulation
from loadorch.errors import ExitCode, PreflightError
from loadorch.paths import build_cache_dir
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import load_profile
from loadorch.target.server import TargetServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KiB = 1024


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `directory`, unmounted afterwards; skips where mount is refused."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        reason = f"mounting a tmpfs needs root; these tests run as uid {os.geteuid()}"
        print(reason)
        pytest.skip(reason)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        reason = f"mount -t tmpfs is not permitted here: {result.stderr.strip() or result.returncode}"
        print(reason)
        pytest.skip(reason)
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def fill(directory: Path) -> int:
    """Write into `directory` until the disk refuses; returns the bytes written."""
    written = 0
    chunk = b"\0" * (64 * KiB)
    with (directory / "filler").open("wb", buffering=0) as handle:
        while True:
            try:
                written += handle.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


def test_disk_watch_reports_a_filled_tmpfs(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as mount:
        run_dir = mount / "runs" / "r-1"  # not created yet: measured at its nearest existing parent
        watch = DiskWatch([run_dir, mount, tmp_path], 256 * KiB)
        assert mount in watch.mounts and len(watch.mounts) == 2  # the tmpfs and tmp_path's disk
        assert watch.check() is None
        assert fill(mount) > 512 * KiB
        full = watch.check()
        assert full is not None
        assert full.mount == mount and full.path == run_dir
        assert full.free_bytes < 256 * KiB
        assert str(mount) in full.message
        assert full.to_error().exit_code == ExitCode.INFRASTRUCTURE
        (mount / "filler").unlink()
        assert watch.check() is None  # space back: the watch says so on the next check


def test_check_disk_refuses_a_small_tmpfs_and_names_it(tmp_path: Path) -> None:
    loaded = load_profile("smoke")
    plan = plan_run(loaded.profile, PlanOptions(now_ms=0))
    need = estimate_run_disk(plan, html_report="wait", request_names=len(loaded.profile.scenario.requests))
    with tmpfs(tmp_path / "disk", "8m") as mount:
        with pytest.raises(PreflightError) as caught:
            check_disk(need, mount / "runs", tmp_path / "state")
        err = caught.value
        assert err.exit_code == ExitCode.BAD_INPUT
        assert err.where == str(mount / "runs")
        assert f"mounted at {mount}, which has 8.0 MiB free" in err.message
        assert err.fix is not None and "--runs-dir" in err.fix and "--html-report off" in err.fix


def test_gatling_write_failure_recognises_the_captured_consoles() -> None:
    for name, expected in (
        ("gatling_enospc_console.txt", "writer failed at 23:23:09.227"),
        ("gatling_enospc_samefs_console.txt", "writer failed at 23:25:24.354"),
        ("gatling_enospc_init_console.txt", "could not create its simulation.log at 23:24:40.528"),
    ):
        message = gatling_write_failure((FIXTURES / name).read_bytes())
        assert message is not None and expected in message, (name, message)
        assert "No space left on device" in message


RATE_PER_S = 40
DURATION_S = 6


def test_gatling_on_a_full_disk_injects_on_and_its_console_says_so(
    tmp_path: Path, target: TargetServer
) -> None:
    """The behaviour the run session must guard against, live: exit 0, load to the end, results cut."""
    loaded = load_profile(
        write_profile(tmp_path, rate_per_s=RATE_PER_S, duration_s=DURATION_S, regions="  - {name: local}\n")
    )
    profile = loaded.profile
    compiled = compile_simulation(render_simulation(profile), build_cache_dir())
    plan = plan_run(profile, PlanOptions(now_ms=int(time.time() * 1000), target=target.url, start_lead_s=5))
    injector = plan.injectors[0]
    injector = dataclasses.replace(
        injector, curve=RateCurve.from_points([(0, RATE_PER_S), (DURATION_S, RATE_PER_S)])
    )
    planned_users = RATE_PER_S * DURATION_S
    console = tmp_path / "console.log"  # on a roomy disk, so that the whole story is kept
    # 16 KiB hold ~150 users' records (seen: 146 of 240): the writer fails before the load ends
    with tmpfs(tmp_path / "results", "16k") as results:
        command = injector_command(
            compiled,
            plan,
            injector,
            results_dir=results,
            feeders={f.name: str(loaded.source.parent / f.file) for f in profile.scenario.feeders},
            extra_properties={"gatling.data.file.bufferSize": "512"},  # as spike runs it
        )
        with console.open("wb") as out:
            result = subprocess.run(command.argv, stdout=out, stderr=subprocess.STDOUT, timeout=180)
        text = console.read_bytes()
        logs = list(results.glob("*/simulation.log"))
        assert len(logs) == 1, text[-3000:]
        recorded = logs[0].read_bytes().count(b"\nREQUEST\t")

    message = gatling_write_failure(text)
    assert message is not None and "No space left on device" in message, text[-3000:]
    # Gatling went on: every planned user was injected, and it exited 0 (its RUN record was written)
    final = re.findall(rb"waiting: (\d+) +/ active: (\d+) +/ done: (\d+)", text)[-1]
    assert (int(final[0]), int(final[1]), int(final[2])) == (0, 0, planned_users), final
    assert result.returncode == 0, text[-3000:]
    # ... while its simulation.log holds only the requests made before the disk filled
    counted = re.findall(rb"> Global +\(OK=(\d+) +KO=(\d+)", text)[-1]
    assert 0 < recorded < int(counted[0]) + int(counted[1]), (recorded, counted)
