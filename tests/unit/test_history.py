"""The run registry: record, list, get, last passing, idempotency, two writers, InfluxDB lines."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loadorch.errors import BadInputError
from loadorch.history.registry import (
    SCHEMA_VERSION,
    get_run,
    history_lines,
    last_passing,
    list_runs,
    missed,
    record_from_summary,
    record_missed,
    record_run,
)

START = 1_790_000_000_000


def lat(count: int, p50: int, p95: int, p99: int, ko: int = 0) -> dict[str, Any]:
    everything = {
        "count": count,
        "max": p99 + 10,
        "mean": p50,
        "min": 1,
        "p50": p50,
        "p75": p50,
        "p95": p95,
        "p99": p99,
    }
    return {"all": everything, "ko": {"count": ko}, "ok": {"count": count - ko}}


def make_summary(
    run_id: str,
    *,
    start_ms: int = START,
    verdict: str = "passed",
    profile: str = "viral-x10",
    requests: dict[str, tuple[int, int, int, int, int]] | None = None,
    duration_s: float = 60.0,
) -> dict[str, Any]:
    """A summary.json as verdict.judge writes it; requests: name -> (count, ko, p50, p95, p99)."""
    requests = requests or {"read_feed": (1000, 5, 20, 40, 80), "post": (500, 0, 30, 60, 90)}
    total = sum(r[0] for r in requests.values())
    ko = sum(r[1] for r in requests.values())
    return {
        "run_id": run_id,
        "profile": profile,
        "provider": "local",
        "start_at_ms": start_ms,
        "duration_s": duration_s,
        "verdict": verdict,
        "reason": "every SLO met" if verdict == "passed" else "SLO failed: p95",
        "exit_code": 0 if verdict == "passed" else 1,
        "requests": {"total": total, "ok": total - ko, "ko": ko},
        "latency": lat(total, 22, 50, 85, ko),
        "by_request": {name: lat(c, p50, p95, p99, k) for name, (c, k, p50, p95, p99) in requests.items()},
        "slos": [
            {"name": "p95 latency of all requests <= 300 ms", "threshold": 300, "actual": 50, "passed": True}
        ],
        "fidelity_mape_pct": 2.5,
        "injectors": [{"id": "eu-1", "last_request_end_ms": start_ms + 61_000}],
        "run_dir": f"/tmp/runs/{run_id}",
        "report": None,
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite"


def test_record_and_get_round_trip(db: Path) -> None:
    summary = make_summary("r1")
    record_run(summary, profile="viral-x10", plan_digest="abc", provider="local", schedule="weekly", db=db)
    rec = get_run("r1", db=db)
    assert (rec.run_id, rec.profile, rec.plan_digest, rec.provider, rec.schedule) == (
        "r1",
        "viral-x10",
        "abc",
        "local",
        "weekly",
    )
    assert (rec.requests, rec.ko, rec.p50, rec.p95, rec.p99, rec.max) == (1500, 5, 22, 50, 85, 95)
    assert rec.error_rate == pytest.approx(5 / 1500)
    assert rec.throughput_rps == pytest.approx(25.0)
    assert rec.ended_at_ms == START + 61_000
    assert rec.fidelity_mape == 2.5
    assert [r.request for r in rec.request_stats] == ["post", "read_feed"]
    assert rec.request("read_feed").p95 == 40  # type: ignore[union-attr]
    assert rec.slo_results[0].passed and rec.slo_results[0].limit == 300
    assert rec.summary == summary
    assert rec == record_from_summary(summary, plan_digest="abc", schedule="weekly")


def test_schema_is_versioned_and_wal(db: Path) -> None:
    list_runs(db=db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "request_stats", "slo_results", "missed_runs"} <= tables
    conn.close()


def test_newer_schema_is_refused(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(BadInputError, match="schema version"):
        list_runs(db=db)


def test_rerecording_replaces(db: Path) -> None:
    record_run(make_summary("r1"), profile="p", plan_digest="d", provider="local", db=db)
    changed = make_summary("r1", verdict="failed", requests={"only": (10, 1, 5, 6, 7)})
    record_run(changed, profile="p", plan_digest="d", provider="local", db=db)
    runs = list_runs(db=db)
    assert len(runs) == 1
    assert runs[0].verdict == "failed"
    assert [r.request for r in runs[0].request_stats] == ["only"]


def test_list_most_recent_first_and_by_profile(db: Path) -> None:
    for i, profile in enumerate(["a", "b", "a", "a"]):
        record_run(
            make_summary(f"r{i}", start_ms=START + i * 1000),
            profile=profile,
            plan_digest="",
            provider="x",
            db=db,
        )
    assert [r.run_id for r in list_runs(db=db)] == ["r3", "r2", "r1", "r0"]
    assert [r.run_id for r in list_runs("a", limit=2, db=db)] == ["r3", "r2"]
    assert list_runs("nope", db=db) == []
    with pytest.raises(BadInputError):
        list_runs(limit=0, db=db)


def test_unknown_run_names_close_ids(db: Path) -> None:
    record_run(make_summary("viral-20260101-aaaa"), profile="p", plan_digest="", provider="x", db=db)
    with pytest.raises(BadInputError) as err:
        get_run("viral-20260101-aaab", db=db)
    assert "viral-20260101-aaaa" in err.value.render()
    with pytest.raises(BadInputError, match="no run is recorded yet"):
        get_run("x", db=db.with_name("empty.sqlite"))


def test_last_passing(db: Path) -> None:
    runs = [
        ("r0", "passed", "p"),
        ("r1", "passed", "p"),
        ("r2", "failed", "p"),
        ("r3", "passed", "q"),
        ("r4", "failed", "p"),
    ]
    for i, (run_id, verdict, profile) in enumerate(runs):
        record_run(
            make_summary(run_id, start_ms=START + i, verdict=verdict),
            profile=profile,
            plan_digest="",
            provider="x",
            db=db,
        )
    assert last_passing("p", db=db).run_id == "r1"  # type: ignore[union-attr]
    assert last_passing("p", before_run_id="r1", db=db).run_id == "r0"  # type: ignore[union-attr]
    assert last_passing("p", before_run_id="r0", db=db) is None
    assert last_passing("p", before_run_id="not-recorded", db=db).run_id == "r1"  # type: ignore[union-attr]
    assert last_passing("none", db=db) is None


def test_missed_runs(db: Path) -> None:
    record_missed("weekly", START, "machine was off", db=db)
    record_missed("weekly", START, "machine was off (again)", db=db)
    record_missed("weekly", START - 1000, "previous run still running", db=db)
    record_missed("daily", START, "x", db=db)
    got = missed("weekly", db=db)
    assert [(m.due_at_ms, m.reason) for m in got] == [
        (START - 1000, "previous run still running"),
        (START, "machine was off (again)"),
    ]


def test_writer_waits_for_another_connection(db: Path) -> None:
    list_runs(db=db)  # create the schema
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    other.execute("INSERT INTO missed_runs VALUES ('s', 1, 'held')")
    released = threading.Event()

    def release() -> None:
        time.sleep(0.3)
        other.execute("COMMIT")
        released.set()

    threading.Thread(target=release).start()
    # a reader is not blocked by the writer (WAL)...
    assert list_runs(db=db) == []
    # ...and a writer waits for it instead of failing with "database is locked"
    record_run(make_summary("r1"), profile="p", plan_digest="", provider="x", db=db)
    assert released.is_set()
    assert get_run("r1", db=db).run_id == "r1"
    assert [m.reason for m in missed("s", db=db)] == ["held"]
    other.close()


def _record_many(db: str, prefix: str) -> None:
    for i in range(15):
        record_run(
            make_summary(f"{prefix}{i}", start_ms=START + i),
            profile=prefix,
            plan_digest="",
            provider="x",
            db=db,
        )


def test_two_processes_record_at_once(db: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(db), name)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list_runs(limit=100, db=db)) == 30
    assert all(len(r.request_stats) == 2 for r in list_runs(limit=100, db=db))


def test_a_summary_without_data_is_recorded_as_invalid(db: Path) -> None:
    """Schema 1 called it "no-data"; nothing was measured, which schema 2 calls invalid."""
    summary = {
        "run_id": "r9",
        "profile": "p",
        "verdict": "no-data",
        "reason": "nothing",
        "exit_code": 3,
        "start_at_ms": START,
        "duration_s": 10,
        "injectors": [],
    }
    rec = record_run(summary, profile="p", plan_digest="", provider="local", db=db)
    assert (rec.requests, rec.error_rate, rec.p95, rec.throughput_rps) == (0, None, None, None)
    assert (rec.verdict, rec.exit_code) == ("invalid", 3)
    assert history_lines(rec) == [f"run_history,profile=p,run_id=r9,verdict=invalid requests=0.0 {START}"]
    with pytest.raises(BadInputError, match="no run_id"):
        record_from_summary({"profile": "p"})


def test_history_lines() -> None:
    rec = record_from_summary(make_summary("r 1"))
    (line,) = history_lines(rec)
    assert line.startswith("run_history,profile=viral-x10,run_id=r\\ 1,verdict=passed ")
    assert "p95=50.0" in line and "requests=1500.0" in line and "throughput=25.0" in line
    assert line.endswith(f" {START}")


def test_default_path_is_in_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPIKE_HISTORY_DB", raising=False)
    record_run(make_summary("r1"), profile="p", plan_digest="", provider="x")
    assert (tmp_path / "home" / "history.sqlite").is_file()
    # $SPIKE_HISTORY_DB wins (the tests point it away from the user's own history)
    monkeypatch.setenv("SPIKE_HISTORY_DB", str(tmp_path / "elsewhere.sqlite"))
    record_run(make_summary("r2"), profile="p", plan_digest="", provider="x")
    assert (tmp_path / "elsewhere.sqlite").is_file()
