"""The run registry: every judged run, kept in a local SQLite file for trends and regression checks.

Domain terms:

*run record*
    What the registry keeps of one run (:class:`RunRecord`): identity (run id,
    profile, plan digest, provider, schedule), outcome (verdict, reason, exit
    code), the global numbers (requests, KO, error rate, p50/p95/p99/max,
    throughput, fidelity), one row per request and one per SLO, and the whole
    ``summary.json`` as text, so nothing judged is ever lost.

*plan digest*
    A content digest of what was asked of the system (profile and options),
    given by the caller: two runs with the same digest put the same load on
    the target, so their numbers are comparable as they are.

The file is ``state_dir() / "history.sqlite"`` unless a path is given. The
schema is versioned with ``PRAGMA user_version`` and created on first use.
WAL journaling lets readers and one writer work at the same time; every
write runs in ``BEGIN IMMEDIATE`` with a busy timeout, so two ``spike``
processes (a scheduled run finishing while someone runs ``spike history``,
or two runs ending together) wait for each other instead of failing.

Throughput is ``requests / duration_s`` with the plan's duration, not the
last response's end: a slow tail must not make a run look faster.
"""

from __future__ import annotations

import difflib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadorch.errors import BadInputError, InfrastructureError
from loadorch.metrics import schema
from loadorch.paths import state_dir
from loadorch.run.result import RunResult

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
RUN_HISTORY = "run_history"
"""The InfluxDB measurement of :func:`history_lines` (tags run_id, profile, verdict)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    plan_digest TEXT NOT NULL,
    provider TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    ko INTEGER NOT NULL,
    error_rate REAL,
    p50 INTEGER,
    p95 INTEGER,
    p99 INTEGER,
    max INTEGER,
    throughput_rps REAL,
    fidelity_mape REAL,
    run_dir TEXT,
    report TEXT,
    summary_json TEXT NOT NULL,
    schedule TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_profile ON runs (profile, started_at_ms);
CREATE TABLE IF NOT EXISTS request_stats (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    request TEXT NOT NULL,
    count INTEGER NOT NULL,
    ko INTEGER NOT NULL,
    p50 INTEGER,
    p95 INTEGER,
    p99 INTEGER,
    max INTEGER,
    mean INTEGER,
    PRIMARY KEY (run_id, request)
);
CREATE TABLE IF NOT EXISTS slo_results (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    passed INTEGER NOT NULL,
    observed REAL,
    "limit" REAL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS missed_runs (
    schedule TEXT NOT NULL,
    due_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (schedule, due_at_ms)
);
"""


@dataclass(frozen=True)
class RequestStats:
    """One request's numbers in one run (latencies in ms over OK and KO responses)."""

    request: str
    count: int
    ko: int
    p50: int | None
    p95: int | None
    p99: int | None
    max: int | None
    mean: int | None

    @property
    def error_rate(self) -> float | None:
        return self.ko / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "ko": self.ko,
            "max": self.max,
            "mean": self.mean,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "request": self.request,
        }


@dataclass(frozen=True)
class SloRow:
    """One SLO's outcome in one run."""

    name: str
    passed: bool
    observed: float | None
    limit: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "name": self.name, "observed": self.observed, "passed": self.passed}


@dataclass(frozen=True)
class RunRecord:
    """What the registry keeps of one judged run (see the module docstring)."""

    run_id: str
    profile: str
    plan_digest: str
    provider: str
    started_at_ms: int
    ended_at_ms: int | None
    verdict: str
    reason: str
    exit_code: int
    requests: int
    ko: int
    error_rate: float | None
    p50: int | None
    p95: int | None
    p99: int | None
    max: int | None
    throughput_rps: float | None
    fidelity_mape: float | None
    run_dir: str | None
    report: str | None
    schedule: str | None
    request_stats: tuple[RequestStats, ...] = ()
    slo_results: tuple[SloRow, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def duration_s(self) -> float | None:
        """The planned duration from summary.json (what throughput is computed over)."""
        value = self.summary.get("duration_s")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    def request(self, name: str) -> RequestStats | None:
        return next((r for r in self.request_stats if r.request == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the stored summary.json."""
        return {
            "ended_at_ms": self.ended_at_ms,
            "error_rate": self.error_rate,
            "exit_code": self.exit_code,
            "fidelity_mape": self.fidelity_mape,
            "ko": self.ko,
            "max": self.max,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "plan_digest": self.plan_digest,
            "profile": self.profile,
            "provider": self.provider,
            "reason": self.reason,
            "report": self.report,
            "request_stats": [r.to_dict() for r in self.request_stats],
            "requests": self.requests,
            "run_dir": self.run_dir,
            "run_id": self.run_id,
            "schedule": self.schedule,
            "slo_results": [s.to_dict() for s in self.slo_results],
            "started_at_ms": self.started_at_ms,
            "throughput_rps": self.throughput_rps,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class MissedRun:
    """A scheduled run that did not happen (the machine was off, the previous run still ran, ...)."""

    schedule: str
    due_at_ms: int
    reason: str


# ---------------------------------------------------------------- summary.json -> record (pure)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def record_from_result(
    result: RunResult,
    *,
    profile: str | None = None,
    plan_digest: str = "",
    provider: str | None = None,
    schedule: str | None = None,
    summary: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The record of a run from its typed result (pure; also used to compare a run not yet recorded).

    `profile` and `provider` default to the result's own; `summary` (default: the result's
    serialisation) is what is kept beside the record. A result without statistics (nothing was
    measured) gives zero requests and no latencies.
    """
    if not result.run_id:
        raise BadInputError(
            "the run result has no run_id",
            fix="pass the summary.json that `spike run` wrote (it always has run_id)",
        )
    everything = result.latency.all if result.latency is not None else None
    ends = [i.last_request_end_ms for i in result.injectors if i.last_request_end_ms is not None]
    duration_s = result.duration_s or None
    started = result.start_at_ms
    ended = max(ends) if ends else (started + int(duration_s * 1000) if duration_s else None)
    total, ko = result.requests_total, result.requests_ko
    return RunRecord(
        run_id=result.run_id,
        profile=profile or result.profile,
        plan_digest=plan_digest,
        provider=provider or result.provider,
        started_at_ms=started,
        ended_at_ms=ended,
        verdict=result.verdict.value,
        reason=result.reason,
        exit_code=int(result.exit_code),
        requests=total,
        ko=ko,
        error_rate=ko / total if total else None,
        p50=everything.p50 if everything else None,
        p95=everything.p95 if everything else None,
        p99=everything.p99 if everything else None,
        max=everything.max if everything else None,
        throughput_rps=round(total / duration_s, 6) if duration_s and total else None,
        fidelity_mape=result.fidelity.mape_pct if result.fidelity is not None else None,
        run_dir=result.run_dir or None,
        report=result.report.path,
        schedule=schedule,
        request_stats=tuple(
            RequestStats(
                request=name,
                count=lat.all.count,
                ko=lat.ko.count,
                p50=lat.all.p50,
                p95=lat.all.p95,
                p99=lat.all.p99,
                max=lat.all.max,
                mean=lat.all.mean,
            )
            for name, lat in sorted(result.by_request.items())
        ),
        slo_results=tuple(SloRow(s.name, s.passed, _num(s.actual), _num(s.threshold)) for s in result.slos),
        summary=dict(summary) if summary is not None else result.to_dict(),
    )


def record_from_summary(
    summary: Mapping[str, Any],
    *,
    profile: str | None = None,
    plan_digest: str = "",
    provider: str | None = None,
    schedule: str | None = None,
) -> RunRecord:
    """The record of a run from a summary.json: read into the typed result first, then recorded."""
    if not isinstance(summary.get("run_id"), str) or not summary.get("run_id"):
        raise BadInputError(
            "the run summary has no run_id",
            fix="pass the summary.json that `spike run` wrote (it always has run_id)",
        )
    return record_from_result(
        RunResult.from_dict(summary),
        profile=profile,
        plan_digest=plan_digest,
        provider=provider,
        schedule=schedule,
        summary=summary,
    )


# ---------------------------------------------------------------- the SQLite file


def default_db_path() -> Path:
    """$SPIKE_HISTORY_DB, else `history.sqlite` in spike's state directory."""
    override = os.environ.get("SPIKE_HISTORY_DB")
    return Path(override) if override else state_dir() / "history.sqlite"


@contextmanager
def _connect(db: Path | str | None, *, write: bool) -> Iterator[sqlite3.Connection]:
    """A connection with the schema in place; a write runs in one BEGIN IMMEDIATE transaction."""
    path = Path(db) if db is not None else default_db_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly, so a writer takes the lock up front
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise InfrastructureError(
            f"cannot open the run history {path}: {exc}",
            fix="check that the directory is writable, or set SPIKE_HOME to another directory",
        ) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        _ensure_schema(conn, path)
        # a reader's transaction is one consistent snapshot (WAL): a run and its rows, never half a replace
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise InfrastructureError(
            f"the run history {path} failed: {exc}",
            fix="if another spike process holds it for long, wait and retry; if the file is damaged, move it away",
        ) from exc
    finally:
        conn.close()


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise BadInputError(
            f"the run history {path} has schema version {version}; this spike knows up to {SCHEMA_VERSION}",
            fix="upgrade spike, or pass another --db",
        )
    _enable_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        # checked again under the write lock: another process may have just created it
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (a property of the file, set once, outside any transaction).

    SQLite can answer "database is locked" at once, without its busy handler,
    when two processes switch a new file at the same moment; so retry here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_RUN_COLUMNS = (
    "run_id",
    "profile",
    "plan_digest",
    "provider",
    "started_at_ms",
    "ended_at_ms",
    "verdict",
    "reason",
    "exit_code",
    "requests",
    "ko",
    "error_rate",
    "p50",
    "p95",
    "p99",
    "max",
    "throughput_rps",
    "fidelity_mape",
    "run_dir",
    "report",
    "summary_json",
    "schedule",
)


def record_run(
    run: RunResult | Mapping[str, Any],
    *,
    profile: str,
    plan_digest: str,
    provider: str,
    schedule: str | None = None,
    db: Path | str | None = None,
) -> RunRecord:
    """Keep a judged run (its typed result, or a summary.json); recording the same run_id again replaces it.

    Returns the record as stored.
    """
    if isinstance(run, RunResult):
        rec = record_from_result(
            run, profile=profile, plan_digest=plan_digest, provider=provider, schedule=schedule
        )
    else:
        rec = record_from_summary(
            run, profile=profile, plan_digest=plan_digest, provider=provider, schedule=schedule
        )
    summary = rec.summary
    values = {
        **{c: getattr(rec, c) for c in _RUN_COLUMNS if c != "summary_json"},
        "summary_json": json.dumps(summary, sort_keys=True, default=str),
    }
    with _connect(db, write=True) as conn:
        # the child rows go with the old run (ON DELETE CASCADE), so a replay leaves no stale request
        conn.execute("DELETE FROM runs WHERE run_id = ?", (rec.run_id,))
        conn.execute(
            f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
            [values[c] for c in _RUN_COLUMNS],
        )
        conn.executemany(
            "INSERT INTO request_stats (run_id, request, count, ko, p50, p95, p99, max, mean)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (rec.run_id, r.request, r.count, r.ko, r.p50, r.p95, r.p99, r.max, r.mean)
                for r in rec.request_stats
            ],
        )
        conn.executemany(
            'INSERT OR REPLACE INTO slo_results (run_id, name, passed, observed, "limit") VALUES (?, ?, ?, ?, ?)',
            [(rec.run_id, s.name, int(s.passed), s.observed, s.limit) for s in rec.slo_results],
        )
    return rec


def _load(conn: sqlite3.Connection, row: sqlite3.Row) -> RunRecord:
    run_id = row["run_id"]
    requests = tuple(
        RequestStats(r["request"], r["count"], r["ko"], r["p50"], r["p95"], r["p99"], r["max"], r["mean"])
        for r in conn.execute("SELECT * FROM request_stats WHERE run_id = ? ORDER BY request", (run_id,))
    )
    slos = tuple(
        SloRow(r["name"], bool(r["passed"]), r["observed"], r["limit"])
        for r in conn.execute("SELECT * FROM slo_results WHERE run_id = ? ORDER BY rowid", (run_id,))
    )
    plain = {c: row[c] for c in _RUN_COLUMNS if c != "summary_json"}
    return RunRecord(
        **plain, request_stats=requests, slo_results=slos, summary=json.loads(row["summary_json"])
    )


def list_runs(
    profile: str | None = None, limit: int = 50, *, db: Path | str | None = None
) -> list[RunRecord]:
    """The most recent runs first (by start time), of one profile or of all."""
    if limit < 1:
        raise BadInputError(f"limit must be at least 1, not {limit}", fix="pass --limit 1 or more")
    with _connect(db, write=False) as conn:
        where, args = ("WHERE profile = ?", [profile]) if profile else ("", [])
        rows = conn.execute(
            f"SELECT * FROM runs {where} ORDER BY started_at_ms DESC, run_id DESC LIMIT ?", [*args, limit]
        ).fetchall()
        return [_load(conn, row) for row in rows]


def get_run(run_id: str, *, db: Path | str | None = None) -> RunRecord:
    """One recorded run; BadInputError naming the closest recorded ids when it is unknown."""
    with _connect(db, write=False) as conn:
        row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None:
            return _load(conn, row)
        known = [
            r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY started_at_ms DESC, run_id DESC")
        ]
    close = difflib.get_close_matches(run_id, known, n=3, cutoff=0.5) or known[:3]
    fix = (
        f"did you mean {', '.join(close)}? `spike history` lists recorded runs"
        if close
        else "no run is recorded yet: a run is recorded when `spike run` finishes"
    )
    raise BadInputError(f"no recorded run has the id {run_id!r}", fix=fix)


def last_passing(
    profile: str, before_run_id: str | None = None, *, db: Path | str | None = None
) -> RunRecord | None:
    """The latest run of `profile` whose verdict is "passed"; None if there is none.

    With `before_run_id`, only runs that started before that run (when it is
    recorded) and are not that run count: the baseline of a run is never
    itself or a later run.
    """
    with _connect(db, write=False) as conn:
        clauses, args = ["profile = ?", "verdict = 'passed'"], [profile]
        if before_run_id is not None:
            clauses.append("run_id != ?")
            args.append(before_run_id)
            ref = conn.execute("SELECT started_at_ms FROM runs WHERE run_id = ?", (before_run_id,)).fetchone()
            if ref is not None:
                clauses.append("started_at_ms < ?")
                args.append(ref[0])
        row = conn.execute(
            f"SELECT * FROM runs WHERE {' AND '.join(clauses)} ORDER BY started_at_ms DESC, run_id DESC LIMIT 1",
            args,
        ).fetchone()
        return _load(conn, row) if row is not None else None


def record_missed(schedule: str, due_at_ms: int, reason: str, *, db: Path | str | None = None) -> None:
    """Note that a scheduled run due at `due_at_ms` did not happen, and why (idempotent per due time)."""
    with _connect(db, write=True) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO missed_runs (schedule, due_at_ms, reason) VALUES (?, ?, ?)",
            (schedule, due_at_ms, reason),
        )


def missed(schedule: str, *, db: Path | str | None = None) -> list[MissedRun]:
    """The missed runs of a schedule, oldest first."""
    with _connect(db, write=False) as conn:
        rows = conn.execute(
            "SELECT schedule, due_at_ms, reason FROM missed_runs WHERE schedule = ? ORDER BY due_at_ms",
            (schedule,),
        ).fetchall()
    return [MissedRun(r["schedule"], r["due_at_ms"], r["reason"]) for r in rows]


def history_lines(record: RunRecord) -> list[str]:
    """The run as one InfluxDB line-protocol point of the `run_history` measurement, at its start time.

    Tags run_id, profile, verdict; fields p50, p95, p99, error_rate,
    throughput (requests/s) and requests; a field without a value is left out.
    """
    candidates: dict[str, float | int | None] = {
        "p50": record.p50,
        "p95": record.p95,
        "p99": record.p99,
        "error_rate": record.error_rate,
        "throughput": record.throughput_rps,
        "requests": record.requests,
    }
    fields: dict[str, float | int | str | bool] = {k: v for k, v in candidates.items() if v is not None}
    tags = {"run_id": record.run_id, "profile": record.profile, "verdict": record.verdict}
    return [schema.line(RUN_HISTORY, tags, fields, record.started_at_ms)]
