"""Points that have not reached InfluxDB yet: found per run directory, counted exactly, delivered later.

Where they wait, under `runs/<run_id>/`:

- `injectors/<injector>/agent-spool/`: what a local injector's agent could not write
  (`loadorch.agent.spool`: CRC-checked records behind a cursor);
- `unsent-points.lp`: line protocol spike itself could not write (its run points, and the points it
  forwards for remote agents), appended with `append_unsent`;
- `metrics-sink.json` says where they belong: the run's InfluxDB settings, without secrets
  (`write_sink_settings`). Secrets are read again at delivery, from the environment or the files
  the settings name (`InfluxSettings.from_env`).

A point counts as pending from the moment it is on disk until the sink has accepted it; the figure
is the number of line-protocol lines, read from the files themselves (never from counters kept
elsewhere, which a killed process cannot update).

Delivery goes run by run, each injector's spool oldest first, then `unsent-points.lp`, in batches.
The guarantee: a batch is removed from disk (spool cursor moved, file offset recorded) only after
the sink accepted it, so no point is ever lost, whatever crashes when. A point can be written twice
only when spike dies between the sink's answer and that record (one batch at most) or when a stuck
write is abandoned; InfluxDB keeps one point per series and timestamp, so the repeat replaces the
point with itself and per-second counts stay exact. Two flushes of one run never overlap (a lock
per run directory), and a spool whose agent still runs is left alone (the agent holds its lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

# The spool is the agent's on-disk format; reading it back is this module's job.
from loadorch.agent.spool import Spool, count_pending
from loadorch.atomic import write_atomic
from loadorch.errors import BadInputError, SpikeError
from loadorch.metrics.influx import InfluxSettings, make_sink
from loadorch.metrics.sink import Sink, SinkRejected, SinkUnavailable

SINK_SETTINGS_FILE = "metrics-sink.json"
UNSENT_FILE = "unsent-points.lp"
SPOOL_DIR = "agent-spool"
_PROGRESS_FILE = "unsent-points.delivered.json"  # how much of unsent-points.lp is delivered
_FLUSH_LOCK = ".metrics-flush.lock"
BATCH_LINES = 5000
# InfluxSettings.from_env keywords that may be stored: everything but the secrets themselves
SETTING_KEYS = frozenset(
    {
        "url",
        "api",
        "database",
        "retention_policy",
        "username",
        "org",
        "bucket",
        "token_file",
        "password_file",
        "timeout_s",
    }
)


# ---------------------------------------------------------------- where a run's points belong


def write_sink_settings(run_dir: Path, influx: Mapping[str, Any] | None) -> Path:
    """Record `runs/<id>/metrics-sink.json` atomically: the run's InfluxDB settings (None: no live metrics).

    `influx` is the dict of `InfluxSettings.from_env` keywords the CLI builds; a key that is not one
    of them (a token or a password, say) is refused, so no secret is ever written here.
    """
    settings = None
    if influx is not None:
        unknown = sorted(set(influx) - SETTING_KEYS)
        if unknown:
            raise BadInputError(
                f"refusing to record InfluxDB setting(s) {', '.join(unknown)} in {SINK_SETTINGS_FILE}",
                where=str(run_dir),
                fix=f"secrets come from the environment or token_file/password_file; valid keys: {sorted(SETTING_KEYS)}",
            )
        settings = {key: value for key, value in influx.items() if value is not None}
    path = Path(run_dir) / SINK_SETTINGS_FILE
    _write_atomic(path, json.dumps({"influx": settings}, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_sink_settings(run_dir: Path) -> dict[str, Any] | None:
    """The run's InfluxDB settings (no secrets), or None when the run had none or they are unknown.

    Runs recorded before metrics-sink.json existed still name them in their agents' settings files.
    """
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / SINK_SETTINGS_FILE).read_text())
    except OSError:
        data = None
    except ValueError as exc:
        raise BadInputError(f"{SINK_SETTINGS_FILE} is not valid JSON: {exc}", where=str(run_dir)) from None
    if isinstance(data, dict):
        influx = data.get("influx")
        return dict(influx) if isinstance(influx, dict) else None
    for config in sorted(run_dir.glob("injectors/*/agent.json")):
        with contextlib.suppress(OSError, ValueError):
            sink_settings = json.loads(config.read_text()).get("sink_settings")
            if isinstance(sink_settings, dict):
                return {k: v for k, v in sink_settings.items() if k in SETTING_KEYS}
    return None


def same_destination(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two settings write to the same place: server, database/retention policy, org/bucket."""
    return _destination(a) == _destination(b)


def _destination(influx: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        _server(str(influx.get("url", ""))),
        str(influx.get("database") or "spike"),
        str(influx.get("retention_policy") or ""),
        str(influx.get("org") or ""),
        str(influx.get("bucket") or "spike"),
    )


def _server(url: str) -> str:
    """scheme://host:port with every loopback name as 127.0.0.1 (localhost:8086 is 127.0.0.1:8086)."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if host in ("localhost", "::1") or host.startswith("127."):
        host = "127.0.0.1"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{parts.scheme}://{host}:{port}"


# ---------------------------------------------------------------- unsent-points.lp


def append_unsent(run_dir: Path, lines: Sequence[str]) -> None:
    """Append points spike could not write to the run's unsent-points.lp (safe against a concurrent flush).

    The append holds the file's lock and goes to the file that is at the path at that moment: a flush
    removes a fully delivered file under the same lock, so no line lands in a removed file.
    """
    if not lines:
        return
    path = Path(run_dir) / UNSENT_FILE
    data = ("\n".join(lines) + "\n").encode("utf-8")
    while True:
        with path.open("ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                if not _is_current(handle, path):
                    continue  # delivered and removed while we waited for the lock: append to a new one
                handle.write(data)
                handle.flush()
                return
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _is_current(handle: IO[bytes], path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except OSError:
        return False


def _unsent_offset(run_dir: Path, inode: int, size: int) -> int:
    """Bytes of unsent-points.lp already delivered (0 when the record is missing or is of another file)."""
    try:
        data = json.loads((run_dir / _PROGRESS_FILE).read_text())
        offset, recorded_inode = int(data["offset"]), int(data["inode"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    if recorded_inode != inode or not 0 <= offset <= size:
        return 0
    return offset


def _complete_lines(handle: IO[bytes], limit: int) -> tuple[list[str], int]:
    """Up to `limit` non-empty complete lines from the handle's position, and the bytes they span.

    A last line without its newline is not complete (a writer is still appending it): it is left.
    """
    lines: list[str] = []
    consumed = 0
    while len(lines) < limit:
        raw = handle.readline()
        if not raw.endswith(b"\n"):
            break
        consumed += len(raw)
        text = raw.decode("utf-8", "replace").strip()
        if text:
            lines.append(text)
    return lines, consumed


def _count_unsent(run_dir: Path) -> int:
    path = run_dir / UNSENT_FILE
    try:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            handle.seek(_unsent_offset(run_dir, stat.st_ino, stat.st_size))
            return sum(1 for raw in handle if raw.endswith(b"\n") and raw.strip())
    except OSError:
        return 0


# ---------------------------------------------------------------- what is pending


@dataclass(frozen=True)
class PendingSource:
    """One place of a run where points wait: an injector's agent spool, or unsent-points.lp."""

    kind: str  # "spool" | "unsent"
    path: Path
    points: int
    injector: str | None = None

    @property
    def label(self) -> str:
        return f"{self.injector} spool" if self.kind == "spool" else UNSENT_FILE


@dataclass(frozen=True)
class RunPending:
    """Every pending point of one run directory, in delivery order."""

    run_dir: Path
    sources: tuple[PendingSource, ...] = ()

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def points(self) -> int:
        return sum(source.points for source in self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "points": self.points,
            "sources": [
                {"kind": s.kind, "injector": s.injector, "path": str(s.path), "points": s.points}
                for s in self.sources
            ],
        }


def _spools(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob(f"injectors/*/{SPOOL_DIR}") if p.is_dir())


def find_pending(run_dir: Path) -> RunPending:
    """What of this run has not reached InfluxDB, counted exactly from the files (read-only)."""
    run_dir = Path(run_dir)
    sources = [
        PendingSource("spool", spool, lines, injector=spool.parent.name)
        for spool in _spools(run_dir)
        if (lines := count_pending(spool).lines) > 0
    ]
    if (unsent := _count_unsent(run_dir)) > 0:
        sources.append(PendingSource("unsent", run_dir / UNSENT_FILE, unsent))
    return RunPending(run_dir, tuple(sources))


def pending_points(run_dir: Path) -> int:
    """The exact number of points of this run still waiting for InfluxDB."""
    return find_pending(run_dir).points


def runs_with_pending(runs_dir: Path) -> list[RunPending]:
    """Every run directory under `runs_dir` with something pending, oldest name first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = (find_pending(d) for d in sorted(runs_dir.iterdir()) if d.is_dir())
    return [p for p in found if p.points > 0]


# ---------------------------------------------------------------- delivering


@dataclass(frozen=True)
class RunFlush:
    """What one run's flush did. `error` says why points are still pending; `skipped` that none was tried."""

    run_id: str
    run_dir: Path
    pending_before: int
    delivered: int
    pending_after: int
    destination: str | None = None
    error: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "pending_before": self.pending_before,
            "delivered": self.delivered,
            "pending_after": self.pending_after,
            "destination": self.destination,
            "error": self.error,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class FlushReport:
    """Every run a flush looked at. `complete`: nothing it looked at is pending any more."""

    runs: tuple[RunFlush, ...] = ()

    @property
    def pending_before(self) -> int:
        return sum(r.pending_before for r in self.runs)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.runs)

    @property
    def pending_after(self) -> int:
        return sum(r.pending_after for r in self.runs)

    @property
    def complete(self) -> bool:
        return self.pending_after == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending_before": self.pending_before,
            "delivered": self.delivered,
            "pending_after": self.pending_after,
            "runs": [r.to_dict() for r in self.runs],
        }


class _Busy(Exception):
    """Someone else delivers this run (or its agent still runs)."""


class _Deadline(Exception):
    """The flush's time is up."""


@contextlib.contextmanager
def _flush_lock(run_dir: Path) -> Iterator[None]:
    handle = (run_dir / _FLUSH_LOCK).open("ab")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise _Busy("another spike is delivering this run's points right now") from None
        yield
    finally:
        handle.close()


def deliver_run(
    run_dir: Path,
    sink: Sink,
    *,
    deadline: float | None = None,
    destination: str | None = None,
    batch_lines: int = BATCH_LINES,
) -> RunFlush:
    """Write this run's pending points to `sink`, in order, removing each batch once it is accepted.

    Stops at the first failure (InfluxDB away, or refusing the data: nothing is dropped) or at
    `deadline` (time.monotonic()); what is left stays pending for the next flush.
    """
    run_dir = Path(run_dir)
    before = pending_points(run_dir)
    delivered = _Tally()
    error: str | None = None
    if before:
        try:
            with _flush_lock(run_dir):
                for spool_dir in _spools(run_dir):
                    try:
                        _deliver_spool(spool_dir, sink, deadline, delivered)
                    except _Busy as exc:  # the other injectors' points need not wait for this one
                        error = str(exc)
                _deliver_unsent(run_dir, sink, deadline, batch_lines, delivered)
        except (_Busy, _Deadline) as exc:
            error = str(exc)
        except (SinkUnavailable, SinkRejected) as exc:
            error = exc.message
        except (SpikeError, OSError) as exc:
            error = exc.render() if isinstance(exc, SpikeError) else f"{type(exc).__name__}: {exc}"
    after = pending_points(run_dir)
    if after and error is None:
        error = "more points arrived while delivering (the run may still be going on)"
    return RunFlush(run_dir.name, run_dir, before, delivered.points, after, destination, error)


@dataclass
class _Tally:
    """Points delivered so far (kept when a later write fails)."""

    points: int = 0


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise _Deadline("stopped at the time limit; the rest waits for the next flush")


def _deliver_spool(spool_dir: Path, sink: Sink, deadline: float | None, delivered: _Tally) -> None:
    if count_pending(spool_dir).lines == 0:
        return  # never open (and so lock) a spool with nothing in it: its agent may be starting
    try:
        spool = Spool(spool_dir)
    except SpikeError:
        raise _Busy(
            f"the agent of injector {spool_dir.parent.name} still runs (it holds its spool)"
        ) from None
    try:
        while (batch := spool.peek()) is not None:
            _check_deadline(deadline)
            sink.write(batch)
            spool.ack()  # only now does the batch leave the spool
            delivered.points += len(batch)
    finally:
        spool.close()


def _deliver_unsent(
    run_dir: Path, sink: Sink, deadline: float | None, batch_lines: int, delivered: _Tally
) -> None:
    path = run_dir / UNSENT_FILE
    progress = run_dir / _PROGRESS_FILE
    for _ in range(3):  # appended to while we delivered: go on from where we are, a few times
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            progress.unlink(missing_ok=True)
            return
        with handle:
            stat = os.fstat(handle.fileno())
            offset = _unsent_offset(run_dir, stat.st_ino, stat.st_size)
            handle.seek(offset)
            while True:
                _check_deadline(deadline)
                lines, consumed = _complete_lines(handle, batch_lines)
                if not consumed:
                    break
                sink.write(lines)
                offset += consumed
                # only now are these lines delivered; a crash before this line repeats them, never loses them
                _write_atomic(progress, json.dumps({"inode": stat.st_ino, "offset": offset}))
                delivered.points += len(lines)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # no append in progress while we look
            try:
                if _is_current(handle, path) and os.fstat(handle.fileno()).st_size == offset:
                    # the record goes first: a crash between the two repeats the file, never skips one
                    progress.unlink(missing_ok=True)
                    path.unlink()
                    return
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------- flushing runs with their own settings


SinkFactory = Callable[[Mapping[str, Any]], Sink]


def open_sink(influx: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Sink:
    """A checked sink for these settings; secrets from the environment or the files they name."""
    try:
        settings = InfluxSettings.from_env(**influx, environ=environ)
    except TypeError as exc:
        raise BadInputError(f"invalid InfluxDB settings: {exc}") from None
    sink = make_sink(settings)
    try:
        sink.check()
    except BaseException:
        sink.close()
        raise
    return sink


@dataclass
class _Group:
    settings: dict[str, Any]
    runs: list[RunPending] = field(default_factory=list)


def flush_runs(
    pending: Iterable[RunPending],
    *,
    influx_override: Mapping[str, Any] | None = None,
    only_server: str | None = None,
    environ: Mapping[str, str] | None = None,
    open_sink_for: SinkFactory | None = None,
) -> FlushReport:
    """Deliver each run's pending points to the InfluxDB it belongs to (`read_sink_settings`).

    `influx_override` keys replace the recorded ones (e.g. another url). `only_server` (a URL)
    leaves runs bound for other servers alone (reported as skipped). One sink per destination;
    a destination that cannot be reached is tried once, and its runs keep their points.
    """
    opener = open_sink_for or (lambda influx: open_sink(influx, environ))
    results: list[RunFlush] = []
    groups: dict[str, _Group] = {}
    for run in pending:
        try:
            recorded = read_sink_settings(run.run_dir)
        except BadInputError as exc:
            results.append(_untouched(run, None, exc.render()))
            continue
        settings = {**(recorded or {}), **(influx_override or {})}
        if not settings.get("url"):
            results.append(
                _untouched(run, None, "no InfluxDB settings recorded for this run: give --influx-url")
            )
            continue
        url = str(settings["url"])
        if only_server is not None and _server(url) != _server(only_server):
            results.append(_untouched(run, url, f"bound for another InfluxDB ({url})", skipped=True))
            continue
        key = json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, _Group(settings)).runs.append(run)
    for group in groups.values():
        url = str(group.settings["url"])
        try:
            sink = opener(group.settings)
        except SpikeError as exc:
            message = exc.message if isinstance(exc, SinkUnavailable | SinkRejected) else exc.render()
            results += [_untouched(run, url, message) for run in group.runs]
            continue
        try:
            for run in group.runs:
                results.append(deliver_run(run.run_dir, sink, destination=url))
        finally:
            sink.close()
    return FlushReport(tuple(sorted(results, key=lambda r: r.run_id)))


def _untouched(run: RunPending, url: str | None, why: str, *, skipped: bool = False) -> RunFlush:
    return RunFlush(run.run_id, run.run_dir, run.points, 0, run.points, url, why, skipped)


def flush_all(
    runs_dir: Path,
    *,
    influx_override: Mapping[str, Any] | None = None,
    only_server: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> FlushReport:
    """Flush every run under `runs_dir` that has points pending (see `flush_runs`)."""
    return flush_runs(
        runs_with_pending(runs_dir),
        influx_override=influx_override,
        only_server=only_server,
        environ=environ,
    )


PREFLIGHT_FLUSH_S = 30.0


def flush_pending_quietly(
    runs_dir: Path, sink: Sink, influx: Mapping[str, Any], *, timeout_s: float = PREFLIGHT_FLUSH_S
) -> FlushReport:
    """At a run's preflight: deliver earlier runs' pending points bound for this run's InfluxDB.

    `sink` is the run's sink, already checked; `influx` its settings. Runs recorded for another
    InfluxDB (or for none known) are left alone; nothing here raises, and it stops between batches
    after `timeout_s`, so a large backlog delays the run by that much at most.
    """
    deadline = time.monotonic() + timeout_s
    results: list[RunFlush] = []
    try:
        candidates = runs_with_pending(runs_dir)
    except OSError:
        return FlushReport()
    for run in candidates:
        try:
            recorded = read_sink_settings(run.run_dir)
            if recorded is None or not recorded.get("url") or not same_destination(recorded, influx):
                continue
            results.append(deliver_run(run.run_dir, sink, deadline=deadline, destination=str(influx["url"])))
        except Exception as exc:  # leftovers of earlier runs must never stop this one
            results.append(_untouched(run, str(influx.get("url")), f"{type(exc).__name__}: {exc}"))
    return FlushReport(tuple(results))


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text)
