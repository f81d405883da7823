"""Disk needs and disk watching: a run must never inject while its results cannot be written.

Three pieces, wired by the run session:

- :func:`estimate_run_disk` (pure) turns a Plan into a :class:`DiskNeed`: bytes for the run
  directory, for spike's state directory and for each remote injector's disk, plus the space
  kept free during the run so that it can always be stopped, collected and summarised.
- :func:`check_disk` (preflight) refuses a run whose disks lack that space, saying where and how
  to fix it (a :class:`~loadorch.errors.PreflightError`, exit 2).
- :class:`DiskWatch` (once a second during the run) reports a disk that fell below the space to
  keep free, and :func:`gatling_write_failure` / :class:`ConsoleWatch` read Gatling's own report
  that its simulation.log writer died. Either means: stop the load, collect, summarise, exit 3.

Why both watches: Gatling 3.11.5 does not stop when its file writer fails (ENOSPC). It logs the
failure once, then injects to the end of the plan and exits 0 (checked on a 256 KiB tmpfs: the
writer died 15 s into a 60 s run, the JVM injected all 6,000 users, simulation.log stayed cut
off mid-record). On a remote injector only its console says so; here the free space says it
first, and on the same full disk the console itself may be cut short.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadorch.errors import InfrastructureError, PreflightError
from loadorch.plan.model import Plan

# --- what a run writes, measured -----------------------------------------------------------
#
# Measured with Gatling 3.11.5 against `spike target serve` (December 2026): `spike run` of a
# steps profile, 60 s at 100 users/s, 2 requests per user, 4 request names (read_feed,
# read_post, like_post and missing_page, a 404 every tenth request), two regions; per injector
# 12,000 REQUEST and 12,000 USER records, simulation.log 524,919 bytes. Bytes per record,
# newline included, as `awk` summed them per record type:
#   REQUEST OK   52 B  (43 + the request name: "REQUEST\t\tread_feed\t<ms>\t<ms>\tOK\t \n")
#   REQUEST KO   97 B  (the message "status.find.in(200), but actually found 404" instead of " ")
#   USER         31 B  (25 + the scenario name; one START and one END per user)
#   RUN + ASSERTION records: about 200 B per injector
# The estimate takes the KO size for every request (a storm that breaks the target writes KOs),
# so an all-OK run needs about half of it; names longer than these are what SAFETY_FACTOR is for.
REQUEST_RECORD_BYTES = 100
USER_RECORD_BYTES = 32
LOG_HEADER_BYTES = 1024
# The agent's tap (agent-tap.lp), same run: 1,102 lines, 243,044 bytes per injector. Per second
# it writes 3 lines (ok, ko, all) per request name and for allRequests, 2 user lines (the
# scenario and allUsers) and 1 injector_health line; lines were 172-218 B with spike's run id.
TAP_LINE_BYTES = 256
TAP_FIXED_LINES_PER_S = 3 + 2 + 1  # allRequests ok/ko/all, the two user lines, injector_health
# Lines written before the shared start (agents and JVMs booting) and after the end (drain).
BOOT_AND_DRAIN_S = 60.0
# Gatling's console (console.log): one block every 5 s of about 12 lines plus one per request
# name and one per distinct error, ~80 B a line; measured 14,892 B for the 70 s above (4 names).
CONSOLE_LINE_BYTES_PER_S = 16
CONSOLE_FIXED_LINES = 12
# The merged HTML report (`-ro`), measured by running Gatling's reports-only mode over synthetic
# simulation.logs of 1 to 64 request names, 60 s to 3,600 s, 600 to 360,000 requests: 0.58 MB
# (1 name, 60 s), 0.80 MB (1 name, >= 1,200 s), 1.18 MB (4 names, 3,600 s), 1.27 MB (4 names,
# 360,000 requests), 2.37 MB (16 names), 7.17 MB (64 names). It does not grow with the number of
# requests (charts are capped at 1,000 points per series, reached at ~1,000 s) but by ~105-125 KB
# per request name; the spike run above gave 0.70 MB (4 names, 60 s). An upper bound therefore:
REPORT_BASE_BYTES = 1 << 20
REPORT_PER_REQUEST_NAME_BYTES = 128 << 10
# plan.json, profile.yaml, Simulation.scala, summary.json, report-console.log, agent files: ~20 KB.
RUN_FILES_BYTES = 1 << 20
# The agent's spool (only with live metrics, while InfluxDB is away) holds the same lines as the
# tap, bounded by loadorch.agent.spool.DEFAULT_MAX_BYTES per agent; it lives in the agent's work
# directory: under the run directory for local injectors, on the injector for remote ones.
SPOOL_MAX_BYTES = 256 << 20
# spike's state directory during a run: the history registry gains a row, a new simulation is
# compiled into the build cache (~112 KB measured); remote deploys pack the Gatling libraries once
# into gatling-builds/bundles (libs-*.tar measured 57,098,240 B) and unpack them on each injector.
STATE_FILES_BYTES = 1 << 20
DEPLOY_BUNDLE_BYTES = 64 << 20
# Covers what the figures above do not: longer request and scenario names, users injected
# beyond the plan during an overrun, block rounding, report variance.
SAFETY_FACTOR = 1.25
DEFAULT_REQUEST_NAMES = 8
HTML_REPORT_MODES = ("wait", "background", "off")

# --- the space kept free during a run ------------------------------------------------------
#
# When DiskWatch trips, spike still has to write: the injectors go on until they are stopped
# (one watch tick, then up to stop_grace_s of graceful stop, all at the peak rate), then come
# summary.json, the links of report/ and the journal. MIN_FREE_FLOOR_BYTES covers the latter
# and the file systems' own slack (ext4 starts refusing writes of ordinary users at f_bavail=0
# while metadata still needs blocks); the peak window covers the former on fast runs.
MIN_FREE_FLOOR_BYTES = 64 << 20
WATCH_TICK_S = 1.0
MIN_FREE_INODES = 1000  # a run creates ~60 files (its report ~40); only where inodes are counted


@dataclass(frozen=True)
class DiskNeed:
    """The disk a run needs, from its plan (see :func:`estimate_run_disk`).

    `run_dir_bytes` and `state_dir_bytes` include the safety factor; `min_free_bytes` is kept free
    on top, during the whole run (:class:`DiskWatch`'s threshold). `injector_host_bytes` is what
    each remote injector's own disk needs (0 for local injectors, whose files are in the run
    directory). The parts are the figures before the safety factor, for messages.
    """

    run_dir_bytes: int
    state_dir_bytes: int
    injector_host_bytes: int
    min_free_bytes: int
    peak_write_bytes_per_s: float
    run_dir_parts: tuple[tuple[str, int], ...]
    state_dir_parts: tuple[tuple[str, int], ...]


def estimate_run_disk(
    plan: Plan,
    *,
    html_report: str,
    request_names: int = DEFAULT_REQUEST_NAMES,
    live_metrics: bool = False,
    influx_in_state_dir: bool = False,
    stop_grace_s: float = 10.0,
) -> DiskNeed:
    """What `plan` will write, as an upper bound (pure: the plan and the options only).

    `request_names`: the scenario's number of requests (`len(profile.scenario.requests)`); the
    tap and the report grow with it. `live_metrics`: the agents stream to InfluxDB, so each one
    may spool while it is away. `influx_in_state_dir`: that InfluxDB is `spike stack up`'s, whose
    data lives in the state directory (its WAL holds at most the lines' own bytes).
    """
    if html_report not in HTML_REPORT_MODES:
        raise ValueError(f"html_report must be one of {', '.join(HTML_REPORT_MODES)}, got {html_report!r}")
    if request_names < 1:
        raise ValueError("request_names must be at least 1")
    local = plan.provider == "local"
    injectors = plan.injectors
    per_user = plan.requests_per_user * REQUEST_RECORD_BYTES + 2 * USER_RECORD_BYTES
    logs = math.ceil(plan.planned_users * per_user) + len(injectors) * LOG_HEADER_BYTES
    largest_log = max(
        (math.ceil(i.planned_users * per_user) + LOG_HEADER_BYTES for i in injectors), default=0
    )
    tap_lines_per_s = 3 * request_names + TAP_FIXED_LINES_PER_S
    tap_per_injector = math.ceil(tap_lines_per_s * TAP_LINE_BYTES * (plan.duration_s + BOOT_AND_DRAIN_S))
    console_per_s = CONSOLE_LINE_BYTES_PER_S * (CONSOLE_FIXED_LINES + 2 * request_names)
    console_per_injector = math.ceil(console_per_s * (plan.duration_s + BOOT_AND_DRAIN_S))
    spool_per_injector = min(SPOOL_MAX_BYTES, tap_per_injector) if live_metrics else 0

    # A local injector writes simulation.log into the run directory and report/ hard-links it.
    # A remote one's log is mirrored here as it grows, and at collect the complete file is fetched
    # beside the mirror before it replaces it: two copies for a moment.
    run_parts = [
        ("simulation.log records", logs if local else 2 * logs),
        ("agent taps", len(injectors) * tap_per_injector),
        ("Gatling consoles", len(injectors) * console_per_injector),
        ("run files", RUN_FILES_BYTES),
    ]
    if local and live_metrics:
        run_parts.append(("agent spools while InfluxDB is away", len(injectors) * spool_per_injector))
    if html_report != "off":
        run_parts.append(("HTML report", REPORT_BASE_BYTES + REPORT_PER_REQUEST_NAME_BYTES * request_names))

    state_parts = [("history and build cache", STATE_FILES_BYTES)]
    if not local:
        state_parts.append(("deploy bundles", DEPLOY_BUNDLE_BYTES))
    if live_metrics and influx_in_state_dir:
        state_parts.append(("local InfluxDB data", len(injectors) * tap_per_injector))

    host = 0
    if not local:
        host = DEPLOY_BUNDLE_BYTES + largest_log + tap_per_injector + console_per_injector
        host += spool_per_injector

    # the run directory's write rate at the plan's peak: records, plus taps, consoles and spools
    peak = plan.peak_rate * per_user + len(injectors) * (
        tap_lines_per_s * TAP_LINE_BYTES * (2 if local and live_metrics else 1) + console_per_s
    )
    min_free = max(MIN_FREE_FLOOR_BYTES, math.ceil(peak * (WATCH_TICK_S + stop_grace_s)))
    return DiskNeed(
        run_dir_bytes=math.ceil(sum(b for _, b in run_parts) * SAFETY_FACTOR),
        state_dir_bytes=math.ceil(sum(b for _, b in state_parts) * SAFETY_FACTOR),
        injector_host_bytes=math.ceil(host * SAFETY_FACTOR),
        min_free_bytes=min_free,
        peak_write_bytes_per_s=peak,
        run_dir_parts=tuple(run_parts),
        state_dir_parts=tuple(state_parts),
    )


# --- where a path's bytes go ---------------------------------------------------------------


@dataclass(frozen=True)
class DiskSpace:
    """The file system a path is (or would be created) on, and its free space for spike."""

    path: Path
    existing: Path  # the path itself or its nearest existing parent, which statvfs measures
    device: int
    mount: Path
    free_bytes: int  # f_bavail * f_frsize: what an unprivileged writer may still use
    free_inodes: int | None  # None where the file system does not count inodes (btrfs)


Probe = Callable[[Path], DiskSpace]
StatVfs = Callable[[Path], os.statvfs_result]


def _existing(path: Path) -> Path:
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _mount_point(path: Path) -> Path:
    current = Path(os.path.realpath(path))
    while not os.path.ismount(current):
        current = current.parent
    return current


def _free(vfs: os.statvfs_result) -> tuple[int, int | None]:
    return vfs.f_bavail * vfs.f_frsize, (vfs.f_favail if vfs.f_files else None)


def disk_space(path: Path) -> DiskSpace:
    """Measure the file system `path` is on; a path that does not exist yet counts as its parent's."""
    existing = _existing(path)
    free, inodes = _free(os.statvfs(existing))
    return DiskSpace(Path(path), existing, existing.stat().st_dev, _mount_point(existing), free, inodes)


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB': binary units, as `df -h` counts them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _parts(parts: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {format_bytes(b)}" for name, b in parts if b)


def check_disk(need: DiskNeed, run_dir_parent: Path, state_dir: Path, *, probe: Probe = disk_space) -> None:
    """Refuse the run (PreflightError, exit 2) when a disk lacks what `need` says.

    `run_dir_parent` is the runs directory (the run's own directory is created in it), `state_dir`
    spike's state directory; either may not exist yet. Each file system must hold its share plus
    `need.min_free_bytes`, kept free during the run; when both are on one, their shares add up.
    """
    run_space, state_space = probe(run_dir_parent), probe(state_dir)
    same = run_space.device == state_space.device
    # (file system, its share, holds the run directory, holds the state directory)
    checks = [(run_space, need.run_dir_bytes + (need.state_dir_bytes if same else 0), True, same)]
    if not same:
        checks.append((state_space, need.state_dir_bytes, False, True))
    for space, share, holds_runs, holds_state in checks:
        if space.free_inodes is not None and space.free_inodes < MIN_FREE_INODES:
            raise PreflightError(
                f"the file system mounted at {space.mount} has {space.free_inodes:,} free inodes;"
                f" a run needs at least {MIN_FREE_INODES:,}",
                where=str(space.path),
                fix=_fix(space, need, holds_runs, holds_state, inodes=True),
            )
        required = share + need.min_free_bytes
        if space.free_bytes >= required:
            continue
        parts = (*(need.run_dir_parts if holds_runs else ()), *(need.state_dir_parts if holds_state else ()))
        what = {
            (True, True): "the run directory and spike's state directory",
            (True, False): "the run directory",
            (False, True): "spike's state directory",
        }[holds_runs, holds_state]
        raise PreflightError(
            f"not enough disk for this run: {what} need {format_bytes(required)} on the file system"
            f" mounted at {space.mount}, which has {format_bytes(space.free_bytes)} free"
            f" (estimate {format_bytes(share)} with x{SAFETY_FACTOR:g} safety: {_parts(parts)};"
            f" plus {format_bytes(need.min_free_bytes)} kept free so that a run can always be stopped"
            " and summarised)",
            where=str(space.path),
            fix=_fix(space, need, holds_runs, holds_state),
        )


def _fix(
    space: DiskSpace, need: DiskNeed, holds_runs: bool, holds_state: bool, *, inodes: bool = False
) -> str:
    fixes = [f"free {'inodes' if inodes else 'space'} on {space.mount}"]
    if holds_runs:
        fixes.append("write runs to a roomier disk with --runs-dir DIR")
    if holds_state:
        fixes.append("move spike's state to a roomier disk with SPIKE_HOME=DIR")
    if holds_runs and not inodes:
        fixes.append("shorten the run or lower its rate")
        report = dict(need.run_dir_parts).get("HTML report")
        if report:
            fixes.append(f"--html-report off (saves {format_bytes(report * SAFETY_FACTOR)})")
    return "; ".join(fixes)


# --- during the run ------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskFull:
    """A disk that fell below the space kept free: the load must stop while results can be written."""

    path: Path
    mount: Path
    free_bytes: int
    min_free_bytes: int
    free_inodes: int | None = None  # set when inodes, not bytes, ran out

    @property
    def message(self) -> str:
        if self.free_inodes is not None:
            left = f"{self.free_inodes:,} free inodes"
        else:
            left = f"{format_bytes(self.free_bytes)} free, below the {format_bytes(self.min_free_bytes)} kept free"
        return (
            f"the disk holding {self.path} (mounted at {self.mount}) is nearly full: {left};"
            " the load was stopped so that the results written so far are kept"
        )

    def to_error(self) -> InfrastructureError:
        """The error the run ends with (exit 3), once it has collected and summarised."""
        return InfrastructureError(
            self.message,
            where=str(self.mount),
            fix=f"free space on {self.mount} or write runs elsewhere with --runs-dir DIR, then run again",
        )


@dataclass(frozen=True)
class _Watched:
    path: Path
    existing: Path
    mount: Path


class DiskWatch:
    """Checks, once a second, that every file system a run writes to keeps `min_free_bytes` free.

    The paths are grouped by file system when the watch is made (one stat and mount lookup each),
    so :meth:`check` costs one statvfs per distinct file system.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        min_free_bytes: int,
        *,
        probe: Probe = disk_space,
        statvfs: StatVfs = os.statvfs,
        min_free_inodes: int = 64,
    ) -> None:
        self.min_free_bytes = min_free_bytes
        self.min_free_inodes = min_free_inodes
        self._statvfs = statvfs
        by_device: dict[int, _Watched] = {}
        for path in paths:
            space = probe(path)
            by_device.setdefault(space.device, _Watched(Path(path), space.existing, space.mount))
        self._watched = tuple(by_device.values())

    @property
    def mounts(self) -> tuple[Path, ...]:
        return tuple(w.mount for w in self._watched)

    def check(self) -> DiskFull | None:
        """The first watched file system below the threshold, or None. A path gone away is skipped."""
        for watched in self._watched:
            try:
                free, inodes = _free(self._statvfs(watched.existing))
            except OSError:
                continue
            low_inodes = inodes is not None and inodes < self.min_free_inodes
            if free < self.min_free_bytes or low_inodes:
                return DiskFull(
                    watched.path, watched.mount, free, self.min_free_bytes, inodes if low_inodes else None
                )
        return None


# --- Gatling's own report ------------------------------------------------------------------
#
# What Gatling 3.11.5 logs when its simulation.log writer hits ENOSPC, produced here with the
# results directory on a tiny tmpfs (tests/fixtures/gatling_enospc*_console.txt are excerpts):
#   mid-run, a buffer flush fails (the writer actor crashes; Akka's supervisor logs it again):
#     23:23:09.227 [ERROR] i.g.c.s.w.LogFileDataWriter - Actor io.gatling.core.stats.writer.
#       LogFileDataWriter@1c98b902 crashed on message Some(Response(social,List(),missing_page,...))
#     java.io.IOException: No space left on device
#     23:23:09.231 [ERROR] a.a.OneForOneStrategy - No space left on device
#   at start, the run's results directory cannot be created:
#     23:24:40.528 [ERROR] i.g.c.s.w.LogFileDataWriter - DataWriter failed to initialize
#     java.nio.file.FileSystemException: /tmp/dsk/tiny/spikesimulation-...: No space left on device
# Either way the JVM injects on to the end of the plan. It exits 0 when the RUN record reached
# the disk before the failure, else 1 after the run ("don't contain any valid run record", or
# "simulation directory ... doesn't exist"), so its exit status cannot tell.
_WRITER_FAILED = re.compile(
    rb"^(?:\S+ )?\[ERROR\] \S*LogFileDataWriter - "
    rb"(?P<what>Actor \S+ crashed on message|DataWriter failed to initialize)[^\n]*"
    rb"(?:\n(?P<cause>(?:java|scala)\.[\w.$]+: [^\n]*))?",
    re.MULTILINE,
)
_DISK_ERROR = re.compile(
    rb"^(?:\S+ )?\[ERROR\] [^\n]*(No space left on device|Disk quota exceeded)", re.MULTILINE
)
_TIME = re.compile(rb"^(\d\d:\d\d:\d\d\.\d{3}) ")


def gatling_write_failure(console_text: bytes) -> str | None:
    """Why Gatling stopped recording results, from an injector's console output; None if it did not.

    Matches the writer failure (any cause: ENOSPC, a quota, an I/O error) and, as a fallback for a
    console cut short by the same full disk, any ERROR line naming a full disk or quota.
    """
    match = _WRITER_FAILED.search(console_text)
    if match is not None:
        line = match.group(0).split(b"\n", 1)[0]
        at = _TIME.match(line)
        when = f" at {at.group(1).decode()} (injector clock)" if at else ""
        cause = match.group("cause")
        why = cause.decode("utf-8", "replace").strip() if cause else "cause not in the console"
        if match.group("what").startswith(b"DataWriter"):
            return f"Gatling could not create its simulation.log{when}: {why}; nothing it injects is recorded"
        return f"Gatling's simulation.log writer failed{when}: {why}; nothing injected after it is recorded"
    disk = _DISK_ERROR.search(console_text)
    if disk is not None:
        at = _TIME.match(disk.group(0))
        when = f" at {at.group(1).decode()} (injector clock)" if at else ""
        return f"Gatling reported '{disk.group(1).decode()}'{when}; its results may be incomplete"
    return None


class ConsoleWatch:
    """Reads what each injector's console.log gained since the last check for Gatling's writer failure.

    Keeps a short tail so that a line split between two reads is still seen; each injector's
    failure is reported once.
    """

    TAIL_BYTES = 4096

    def __init__(self, consoles: Mapping[str, Path]) -> None:
        self._consoles = dict(consoles)
        self._offsets = dict.fromkeys(self._consoles, 0)
        self._tails = dict.fromkeys(self._consoles, b"")
        self.failures: dict[str, str] = {}

    def check(self) -> dict[str, str]:
        """Newly found failures: injector id -> message (also kept in `failures`)."""
        found: dict[str, str] = {}
        for name, path in self._consoles.items():
            if name in self.failures:
                continue
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets[name])
                    chunk = handle.read()
            except OSError:
                continue
            if not chunk:
                continue
            self._offsets[name] += len(chunk)
            text = self._tails[name] + chunk
            cut = text.rfind(b"\n", 0, max(0, len(text) - self.TAIL_BYTES))
            self._tails[name] = text[cut + 1 :] if cut >= 0 else text
            message = gatling_write_failure(text)
            if message is not None:
                found[name] = self.failures[name] = message
        return found
