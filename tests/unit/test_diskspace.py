"""Disk needs from a plan, the preflight refusal and the run-time watches, without real disks.

The estimate's figures are computed by hand here from the measured per-record sizes documented in
loadorch/diskspace.py, so a changed constant or formula shows up as a changed number.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from loadorch.curve import RateCurve
from loadorch.diskspace import (
    MIN_FREE_FLOOR_BYTES,
    ConsoleWatch,
    DiskNeed,
    DiskSpace,
    DiskWatch,
    check_disk,
    disk_space,
    estimate_run_disk,
    format_bytes,
    gatling_write_failure,
)
from loadorch.errors import ExitCode, PreflightError
from loadorch.plan.model import InjectorPlan, Plan, RegionPlan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MiB = 1 << 20


def make_plan(
    *, provider: str = "local", rate: float = 10, duration_s: float = 100, rpu: int = 3, injectors: int = 2
) -> Plan:
    """`rate` users/s for `duration_s`, split evenly over `injectors` in one region."""
    curve = RateCurve.from_points([(0, rate), (duration_s, rate)])
    shard = RateCurve.from_points([(0, rate / injectors), (duration_s, rate / injectors)])
    shards = tuple(InjectorPlan(f"r-{n}", "r", n, shard) for n in range(1, injectors + 1))
    return Plan(
        run_id="t-1",
        profile_name="t",
        profile_digest="d",
        provider=provider,
        base_url="http://127.0.0.1:1",
        start_at_ms=0,
        curve=curve,
        requests_per_user=rpu,
        regions=(RegionPlan("r", 1, 1.0, curve, shards),),
    )


# The hand computation for make_plan() (1,000 users, 3 requests each, 2 local injectors, 100 s)
# with 2 request names:
#   per user    3 x 100 (REQUEST) + 2 x 32 (USER START/END)           =       364
#   records     1,000 x 364 + 2 injectors x 1,024 (RUN, ASSERTION)    =   366,048
#   taps        (3 x 2 + 6) lines/s x 256 B x (100 + 60) s x 2        =   983,040
#   consoles    16 x (12 + 2 x 2) B/s x 160 s x 2                     =    81,920
#   run files                                                         = 1,048,576
#   report      1,048,576 + 2 x 131,072                               = 1,310,720
#   sum 3,790,304, x 1.25                                             = 4,737,880
RECORDS, TAPS, CONSOLES, RUN_FILES, REPORT = 366_048, 983_040, 81_920, 1_048_576, 1_310_720


def test_estimate_local_run_by_hand() -> None:
    need = estimate_run_disk(make_plan(), html_report="wait", request_names=2)
    assert dict(need.run_dir_parts) == {
        "simulation.log records": RECORDS,
        "agent taps": TAPS,
        "Gatling consoles": CONSOLES,
        "run files": RUN_FILES,
        "HTML report": REPORT,
    }
    assert need.run_dir_bytes == 4_737_880
    assert need.state_dir_bytes == 1_310_720  # history and build cache, 1 MiB x 1.25
    assert need.injector_host_bytes == 0  # local injectors write into the run directory
    # at the peak: 10 users/s x 364 B + 2 injectors x (12 lines x 256 B + 256 B of console) per s
    assert need.peak_write_bytes_per_s == 10_296
    assert need.min_free_bytes == MIN_FREE_FLOOR_BYTES  # 11 s of 10 KB/s is far below the floor


def test_estimate_without_report_and_with_background_report() -> None:
    off = estimate_run_disk(make_plan(), html_report="off", request_names=2)
    assert "HTML report" not in dict(off.run_dir_parts)
    assert off.run_dir_bytes == 3_099_480  # (3,790,304 - 1,310,720) x 1.25
    background = estimate_run_disk(make_plan(), html_report="background", request_names=2)
    assert background.run_dir_bytes == 4_737_880


def test_estimate_refuses_an_unknown_report_mode() -> None:
    with pytest.raises(ValueError, match="wait, background, off"):
        estimate_run_disk(make_plan(), html_report="later")


def test_estimate_local_live_metrics_spool_in_the_run_dir_and_influx_in_state() -> None:
    need = estimate_run_disk(
        make_plan(), html_report="wait", request_names=2, live_metrics=True, influx_in_state_dir=True
    )
    # each agent may spool every line of its tap (491,520 B, below the 256 MiB bound)
    assert dict(need.run_dir_parts)["agent spools while InfluxDB is away"] == 983_040
    assert need.run_dir_bytes == 5_966_680  # (3,790,304 + 983,040) x 1.25
    assert dict(need.state_dir_parts)["local InfluxDB data"] == 983_040
    assert need.state_dir_bytes == 2_539_520  # (1,048,576 + 983,040) x 1.25
    # the spool doubles the taps' write rate: 3,640 + 2 x (2 x 3,072 + 256)
    assert need.peak_write_bytes_per_s == 16_440


def test_estimate_remote_run_mirrors_twice_and_needs_injector_disk() -> None:
    need = estimate_run_disk(
        make_plan(provider="static"), html_report="wait", request_names=2, live_metrics=True
    )
    parts = dict(need.run_dir_parts)
    assert parts["simulation.log records"] == 2 * RECORDS  # the mirror and the fetched copy at collect
    assert "agent spools while InfluxDB is away" not in parts  # the spools are on the injectors
    assert need.run_dir_bytes == 5_195_440  # (3,790,304 + 366,048) x 1.25
    assert dict(need.state_dir_parts)["deploy bundles"] == 64 * MiB
    assert need.state_dir_bytes == 85_196_800  # (1 MiB + 64 MiB) x 1.25
    # one injector: bundles 67,108,864 + its log 500 x 364 + 1,024 + tap 491,520 + console 40,960
    # + spool 491,520 = 68,315,888, x 1.25
    assert need.injector_host_bytes == 85_394_860


def test_estimate_spool_is_bounded_by_the_agents_cap() -> None:
    need = estimate_run_disk(
        make_plan(duration_s=1_000_000), html_report="off", request_names=2, live_metrics=True
    )
    assert dict(need.run_dir_parts)["agent spools while InfluxDB is away"] == 2 * 256 * MiB


def test_min_free_follows_the_peak_rate_above_the_floor() -> None:
    need = estimate_run_disk(
        make_plan(rate=100_000, duration_s=10, rpu=1, injectors=1), html_report="off", request_names=1
    )
    # 100,000 users/s x (100 + 64) B + (9 lines x 256 B + 16 x 14 B) = 16,402,528 B/s, for the watch
    # tick (1 s) and the stop grace (10 s)
    assert need.peak_write_bytes_per_s == 16_402_528
    assert need.min_free_bytes == 180_427_808


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1536, 64 * MiB, 5 << 30, 5 << 40)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "64.0 MiB",
        "5.0 GiB",
        "5120.0 GiB",
    ]


# --- check_disk with a fake probe ----------------------------------------------------------

NEED = DiskNeed(
    run_dir_bytes=100 * MiB,
    state_dir_bytes=10 * MiB,
    injector_host_bytes=0,
    min_free_bytes=64 * MiB,
    peak_write_bytes_per_s=1.0,
    run_dir_parts=(("simulation.log records", 70 * MiB), ("HTML report", 2 * MiB)),
    state_dir_parts=(("history and build cache", 1 * MiB),),
)


def fake_probe(spaces: dict[str, tuple[int, int, int | None]]) -> Callable[[Path], DiskSpace]:
    """path -> (device, free bytes, free inodes); the mount is /mnt/dev<device>."""

    def probe(path: Path) -> DiskSpace:
        device, free, inodes = spaces[str(path)]
        return DiskSpace(path, path, device, Path(f"/mnt/dev{device}"), free, inodes)

    return probe


def test_check_disk_passes_with_exactly_enough_on_one_filesystem() -> None:
    enough = (100 + 10 + 64) * MiB
    check_disk(
        NEED,
        Path("/runs"),
        Path("/state"),
        probe=fake_probe({"/runs": (1, enough, None), "/state": (1, enough, None)}),
    )


def test_check_disk_adds_both_shares_on_one_filesystem() -> None:
    # enough for the run directory and the reserve, not for the state directory as well
    free = (100 + 64) * MiB + 5 * MiB
    probe = fake_probe({"/runs": (1, free, 10**6), "/state": (1, free, 10**6)})
    with pytest.raises(PreflightError) as caught:
        check_disk(NEED, Path("/runs"), Path("/state"), probe=probe)
    err = caught.value
    assert err.exit_code == ExitCode.BAD_INPUT
    assert err.where == "/runs"
    assert "the run directory and spike's state directory need 174.0 MiB" in err.message
    assert "mounted at /mnt/dev1, which has 169.0 MiB free" in err.message
    assert (
        "simulation.log records 70.0 MiB" in err.message and "history and build cache 1.0 MiB" in err.message
    )
    assert "64.0 MiB kept free" in err.message
    assert err.fix is not None
    for fix in (
        "free space on /mnt/dev1",
        "--runs-dir",
        "SPIKE_HOME",
        "shorten the run",
        "--html-report off",
    ):
        assert fix in err.fix


def test_check_disk_separate_filesystems_each_need_their_share() -> None:
    # the run directory's disk has room for its share alone; the state's is short
    probe = fake_probe({"/runs": (1, (100 + 64) * MiB, None), "/state": (2, (10 + 64) * MiB - 1, None)})
    with pytest.raises(PreflightError) as caught:
        check_disk(NEED, Path("/runs"), Path("/state"), probe=probe)
    err = caught.value
    assert err.where == "/state"
    assert "spike's state directory need 74.0 MiB" in err.message and "/mnt/dev2" in err.message
    assert err.fix is not None and "SPIKE_HOME" in err.fix
    assert "--runs-dir" not in err.fix and "--html-report" not in err.fix
    ok = fake_probe({"/runs": (1, (100 + 64) * MiB, None), "/state": (2, (10 + 64) * MiB, None)})
    check_disk(NEED, Path("/runs"), Path("/state"), probe=ok)


def test_check_disk_run_directory_short_on_its_own_filesystem() -> None:
    probe = fake_probe({"/runs": (1, 100 * MiB, None), "/state": (2, 10**12, None)})
    with pytest.raises(PreflightError) as caught:
        check_disk(NEED, Path("/runs"), Path("/state"), probe=probe)
    assert "the run directory need 164.0 MiB" in caught.value.message
    assert caught.value.fix is not None and "SPIKE_HOME" not in caught.value.fix


def test_check_disk_refuses_without_free_inodes() -> None:
    probe = fake_probe({"/runs": (1, 10**12, 12), "/state": (1, 10**12, 12)})
    with pytest.raises(PreflightError, match="12 free inodes"):
        check_disk(NEED, Path("/runs"), Path("/state"), probe=probe)


def test_disk_space_measures_the_nearest_existing_parent(tmp_path: Path) -> None:
    space = disk_space(tmp_path / "runs" / "not-yet")
    assert space.existing == tmp_path
    assert space.device == tmp_path.stat().st_dev
    assert os.path.ismount(space.mount) and str(tmp_path.resolve()).startswith(str(space.mount))
    assert space.free_bytes > 0


# --- DiskWatch with a fake statvfs ---------------------------------------------------------


def vfs(free_blocks: int, *, frsize: int = 4096, files: int = 1000, favail: int = 500) -> os.statvfs_result:
    return os.statvfs_result((frsize, frsize, 10**6, free_blocks, free_blocks, files, favail, favail, 0, 255))


class FakeDisks:
    """Two devices: paths under /a are on device 1, under /b on device 2."""

    def __init__(self) -> None:
        self.free_blocks = {Path("/a"): 1000, Path("/b"): 1000}
        self.favail = {Path("/a"): 500, Path("/b"): 500}
        self.calls: list[Path] = []

    def probe(self, path: Path) -> DiskSpace:
        root = Path("/" + path.parts[1])
        return DiskSpace(path, root, 1 if root == Path("/a") else 2, root, 0, None)

    def statvfs(self, path: Path) -> os.statvfs_result:
        self.calls.append(path)
        if path not in self.free_blocks:
            raise FileNotFoundError(path)
        return vfs(self.free_blocks[path], favail=self.favail[path])


def test_disk_watch_one_statvfs_per_filesystem_and_trips_below_threshold() -> None:
    disks = FakeDisks()
    watch = DiskWatch(
        [Path("/a/run"), Path("/a/run/injectors"), Path("/b/state")],
        500 * 4096,
        probe=disks.probe,
        statvfs=disks.statvfs,
    )
    assert watch.mounts == (Path("/a"), Path("/b"))
    assert watch.check() is None
    assert disks.calls == [Path("/a"), Path("/b")]
    disks.free_blocks[Path("/b")] = 499
    full = watch.check()
    assert full is not None
    assert (full.path, full.mount, full.free_bytes, full.free_inodes) == (
        Path("/b/state"),
        Path("/b"),
        499 * 4096,
        None,
    )
    assert "/b/state (mounted at /b)" in full.message and "below the 2.0 MiB kept free" in full.message
    error = full.to_error()
    assert error.exit_code == ExitCode.INFRASTRUCTURE and error.fix is not None and "--runs-dir" in error.fix


def test_disk_watch_trips_on_inodes_and_skips_a_vanished_path() -> None:
    disks = FakeDisks()
    watch = DiskWatch([Path("/a/run"), Path("/b/x")], 4096, probe=disks.probe, statvfs=disks.statvfs)
    del disks.free_blocks[Path("/a")]  # gone: not a reason to stop the load
    assert watch.check() is None
    disks.favail[Path("/b")] = 3
    full = watch.check()
    assert full is not None and full.free_inodes == 3 and "3 free inodes" in full.message


# --- Gatling's console ---------------------------------------------------------------------
# The fixtures are verbatim excerpts of real Gatling 3.11.5 output (see
# tests/integration/test_diskspace_tmpfs.py for how they were produced).


def test_gatling_write_failure_names_the_cause_and_the_instant() -> None:
    text = (FIXTURES / "gatling_enospc_console.txt").read_bytes()
    message = gatling_write_failure(text)
    assert message == (
        "Gatling's simulation.log writer failed at 23:23:09.227 (injector clock):"
        " java.io.IOException: No space left on device; nothing injected after it is recorded"
    )


def test_gatling_write_failure_at_start() -> None:
    message = gatling_write_failure((FIXTURES / "gatling_enospc_init_console.txt").read_bytes())
    assert message is not None
    assert message.startswith("Gatling could not create its simulation.log at 23:24:40.528")
    assert "FileSystemException" in message and "No space left on device" in message


def test_gatling_write_failure_in_a_console_cut_short() -> None:
    text = (FIXTURES / "gatling_enospc_samefs_console.txt").read_bytes()
    assert len(text) == 4096  # the console shared the full disk: it ends in the stack trace
    message = gatling_write_failure(text)
    assert message is not None and "No space left on device" in message
    # with the cause line gone too, the writer's crash alone still counts
    crash = text[: text.index(b"\njava.io.IOException")]
    assert gatling_write_failure(crash) == (
        "Gatling's simulation.log writer failed at 23:25:24.354 (injector clock):"
        " cause not in the console; nothing injected after it is recorded"
    )


def test_gatling_write_failure_fallback_and_negatives() -> None:
    text = (FIXTURES / "gatling_enospc_console.txt").read_bytes()
    before = text[: text.index(b"[ERROR]")]
    assert b"elapsed" in before and gatling_write_failure(before) is None
    supervisor_only = b"23:23:09.231 [ERROR] a.a.OneForOneStrategy - No space left on device\n"
    assert gatling_write_failure(supervisor_only) == (
        "Gatling reported 'No space left on device' at 23:23:09.231 (injector clock); its results may be incomplete"
    )
    other = b"12:00:00.000 [ERROR] i.g.h.e.GatlingHttpListener - connection refused\n"
    assert gatling_write_failure(other) is None
    assert gatling_write_failure(b"") is None


def test_console_watch_finds_a_line_split_between_reads_once(tmp_path: Path) -> None:
    text = (FIXTURES / "gatling_enospc_console.txt").read_bytes()
    split = text.index(b"crashed on message") + 5
    console = tmp_path / "console.log"
    console.write_bytes(text[:split])
    watch = ConsoleWatch({"eu-1": console, "us-1": tmp_path / "missing.log"})
    assert watch.check() == {}
    with console.open("ab") as handle:
        handle.write(text[split:])
    found = watch.check()
    assert list(found) == ["eu-1"] and "No space left on device" in found["eu-1"]
    assert watch.failures == found
    with console.open("ab") as handle:
        handle.write(text)  # the same failure again: already reported
    assert watch.check() == {}
