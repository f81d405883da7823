"""Pending points of a run directory: exact counts, ordered delivery, nothing lost on failure or crash.

The sink is an in-memory recorder (the Sink protocol), so failures can be placed on purpose; the
spools are real agent spools and the files real files.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loadorch.agent.spool import Spool, count_pending
from loadorch.cli.main import app
from loadorch.errors import BadInputError, ExitCode
from loadorch.metrics.pending import (
    SINK_SETTINGS_FILE,
    UNSENT_FILE,
    RunPending,
    append_unsent,
    deliver_run,
    find_pending,
    flush_pending_quietly,
    flush_runs,
    pending_points,
    read_sink_settings,
    runs_with_pending,
    same_destination,
    write_sink_settings,
)
from loadorch.metrics.sink import Sink, SinkRejected, SinkUnavailable


class RecordingSink:
    """Keeps every accepted batch; can fail (unavailable) from the n-th write on, or die after accepting."""

    def __init__(self, *, fail_from: int | None = None, die_after: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_from = fail_from
        self.die_after = die_after
        self.on_write: Any = None

    @property
    def lines(self) -> list[str]:
        return [line for batch in self.batches for line in batch]

    def write(self, lines: Sequence[str]) -> None:
        if self.fail_from is not None and len(self.batches) >= self.fail_from:
            raise SinkUnavailable("influx down (test)")
        self.batches.append(list(lines))
        if self.on_write is not None:
            self.on_write()
        if self.die_after is not None and len(self.batches) >= self.die_after:
            raise SystemExit("spike killed right after the sink accepted a batch (test)")

    def check(self) -> str:
        return "recording"

    def close(self) -> None:
        pass


def points(prefix: str, n: int, start: int = 0) -> list[str]:
    return [
        f"gatling,run_id=r,injector={prefix} count={i}.0 {1700000000000 + i}" for i in range(start, start + n)
    ]


def make_run(
    runs_dir: Path, run_id: str = "r-1", *, spools: Mapping[str, int] | None = None, unsent: int = 0
) -> Path:
    """A run directory with `spools[injector]` points spooled (batches of 7) and `unsent` lines unsent."""
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    for injector, n in (spools or {}).items():
        spool = Spool(run_dir / "injectors" / injector / "agent-spool")
        lines = points(injector, n)
        for start in range(0, n, 7):
            assert spool.append(lines[start : start + 7])
        spool.close()
    if unsent:
        append_unsent(run_dir, points("orchestrator", unsent))
    return run_dir


def test_sink_settings_round_trip_without_secrets(tmp_path: Path) -> None:
    influx = {"url": "http://127.0.0.1:8086", "api": "auto", "database": "spike", "username": None}
    path = write_sink_settings(tmp_path, influx)
    assert path == tmp_path / SINK_SETTINGS_FILE
    assert read_sink_settings(tmp_path) == {
        "url": "http://127.0.0.1:8086",
        "api": "auto",
        "database": "spike",
    }
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no temporary file left
    with pytest.raises(BadInputError, match="token"):
        write_sink_settings(tmp_path, {"url": "http://x:8086", "token": "s3cret"})
    assert "s3cret" not in path.read_text()
    write_sink_settings(tmp_path, None)
    assert read_sink_settings(tmp_path) is None


def test_sink_settings_fall_back_to_the_agents_config(tmp_path: Path) -> None:
    agent_dir = tmp_path / "injectors" / "eu-1"
    agent_dir.mkdir(parents=True)
    (agent_dir / "agent.json").write_text(
        json.dumps({"sink_settings": {"url": "http://127.0.0.1:9", "api": "v1"}})
    )
    assert read_sink_settings(tmp_path) == {"url": "http://127.0.0.1:9", "api": "v1"}
    (tmp_path / SINK_SETTINGS_FILE).write_text("{broken")
    with pytest.raises(BadInputError, match="not valid JSON"):
        read_sink_settings(tmp_path)


def test_destinations_compare_server_and_database_not_spelling() -> None:
    assert same_destination(
        {"url": "http://localhost:8086/"}, {"url": "http://127.0.0.1:8086", "database": "spike"}
    )
    assert not same_destination({"url": "http://127.0.0.1:8086"}, {"url": "http://127.0.0.1:8087"})
    assert not same_destination(
        {"url": "http://127.0.0.1:8086"}, {"url": "http://127.0.0.1:8086", "database": "x"}
    )


def test_counts_are_exact_lines_of_every_spool_and_the_unsent_file(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, spools={"eu-1": 30, "us-1": 5}, unsent=4)
    # blank lines and a line still being written are not points
    with (run_dir / UNSENT_FILE).open("a") as handle:
        handle.write("\n\ngatling,run_id=r count=1.0 17000000")
    pending = find_pending(run_dir)
    assert [(s.label, s.points) for s in pending.sources] == [
        ("eu-1 spool", 30),
        ("us-1 spool", 5),
        (UNSENT_FILE, 4),
    ]
    assert pending.points == pending_points(run_dir) == 39
    assert [p.run_id for p in runs_with_pending(tmp_path)] == ["r-1"]
    (tmp_path / "empty-run").mkdir()
    assert runs_with_pending(tmp_path)[0].points == 39 and len(runs_with_pending(tmp_path)) == 1


def test_spool_count_matches_what_the_spool_delivers(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=400)
    for i in range(12):
        spool.append(points("x", 3, start=i * 3))
    spool.peek()
    spool.ack()
    assert count_pending(tmp_path) == (spool.pending_batches, spool.pending_lines) == (11, 33)
    spool.close()
    newest = max(tmp_path.glob("*.seg"))
    with newest.open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00torn")  # a crash in the middle of an append
    assert count_pending(tmp_path).lines == 33
    reopened = Spool(tmp_path)
    delivered = []
    while (batch := reopened.peek()) is not None:
        delivered += batch
        reopened.ack()
    assert len(delivered) == 33 and count_pending(tmp_path).lines == 0


def test_delivery_goes_spools_first_then_unsent_and_leaves_nothing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, spools={"a-1": 10, "b-1": 3}, unsent=6)
    sink = RecordingSink()
    result = deliver_run(run_dir, sink, batch_lines=4)
    assert (result.pending_before, result.delivered, result.pending_after, result.error) == (19, 19, 0, None)
    assert sink.lines == points("a-1", 10) + points("b-1", 3) + points("orchestrator", 6)
    assert pending_points(run_dir) == 0
    assert not (run_dir / UNSENT_FILE).exists()
    assert list((run_dir / "injectors" / "a-1" / "agent-spool").glob("*.seg")) == []
    again = deliver_run(run_dir, RecordingSink())
    assert (again.pending_before, again.delivered) == (0, 0)


@pytest.mark.parametrize("fail_from", [0, 1, 2, 3, 4])
def test_an_outage_mid_flush_keeps_the_rest_and_the_next_flush_finishes_exactly(
    tmp_path: Path, fail_from: int
) -> None:
    run_dir = make_run(tmp_path, spools={"a-1": 10}, unsent=9)  # spool batches 7+3, unsent 4+4+1
    first = RecordingSink(fail_from=fail_from)
    result = deliver_run(run_dir, first, batch_lines=4)
    assert result.error == "influx down (test)"
    assert result.delivered == len(first.lines) and result.pending_after == 19 - result.delivered
    assert pending_points(run_dir) == result.pending_after
    second = RecordingSink()
    assert deliver_run(run_dir, second, batch_lines=4).pending_after == 0
    assert first.lines + second.lines == points("a-1", 10) + points("orchestrator", 9)  # once each, in order


@pytest.mark.parametrize("die_after", [1, 2, 3, 4])
def test_a_crash_right_after_a_write_repeats_at_most_that_batch(tmp_path: Path, die_after: int) -> None:
    run_dir = make_run(tmp_path, spools={"a-1": 10}, unsent=9)
    first = RecordingSink(die_after=die_after)
    with pytest.raises(SystemExit):
        deliver_run(run_dir, first, batch_lines=4)
    second = RecordingSink()
    deliver_run(run_dir, second, batch_lines=4)
    everything = points("a-1", 10) + points("orchestrator", 9)
    assert set(first.lines + second.lines) == set(everything)  # nothing lost
    assert (
        second.lines == everything[len(first.lines) - len(first.batches[-1]) :]
    )  # only the last batch again
    assert pending_points(run_dir) == 0


def test_a_rejecting_server_keeps_every_point(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, unsent=5)

    class Rejecting(RecordingSink):
        def write(self, lines: Sequence[str]) -> None:
            raise SinkRejected("database 'spike' not found (test)")

    result = deliver_run(run_dir, Rejecting())
    assert result.pending_after == 5 and "not found" in (result.error or "")


def test_a_spool_held_by_a_running_agent_is_left_and_the_rest_delivered(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, spools={"a-1": 4, "b-1": 4}, unsent=2)
    held = Spool(run_dir / "injectors" / "a-1" / "agent-spool")  # as a live agent holds it
    try:
        sink = RecordingSink()
        result = deliver_run(run_dir, sink)
    finally:
        held.close()
    assert result.delivered == 6 and result.pending_after == 4
    assert "a-1 still runs" in (result.error or "")
    assert sink.lines == points("b-1", 4) + points("orchestrator", 2)


def test_appends_during_a_flush_are_never_lost(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, unsent=10)
    sink = RecordingSink()
    more = iter(range(100, 160, 3))

    def append_while_writing() -> None:  # the run goes on writing while its points are delivered
        start = next(more, None)
        if start is not None:
            thread = threading.Thread(target=append_unsent, args=(run_dir, points("late", 3, start)))
            thread.start()
            thread.join()

    sink.on_write = append_while_writing
    deliver_run(run_dir, sink, batch_lines=3)
    deliver_run(run_dir, sink, batch_lines=3)  # whatever arrived after the first one finished
    late = [line for start in range(100, 160, 3) for line in points("late", 3, start)]
    assert sorted(sink.lines) == sorted(points("orchestrator", 10) + late)
    assert len(sink.lines) == len(set(sink.lines)) and pending_points(run_dir) == 0


def test_flush_runs_uses_each_runs_own_destination(tmp_path: Path) -> None:
    up = make_run(tmp_path, "a-up", unsent=3)
    write_sink_settings(up, {"url": "http://127.0.0.1:1001"})
    down = make_run(tmp_path, "b-down", unsent=2)
    write_sink_settings(down, {"url": "http://127.0.0.1:1002"})
    unknown = make_run(tmp_path, "c-unknown", unsent=1)
    sinks: dict[str, RecordingSink] = {}

    def open_sink_for(influx: Mapping[str, Any]) -> Sink:
        if influx["url"].endswith("1002"):
            raise SinkUnavailable("InfluxDB at http://127.0.0.1:1002 is unreachable (test)")
        return sinks.setdefault(influx["url"], RecordingSink())

    report = flush_runs(runs_with_pending(tmp_path), open_sink_for=open_sink_for)
    by_run = {r.run_id: r for r in report.runs}
    assert (by_run["a-up"].delivered, by_run["a-up"].pending_after) == (3, 0)
    assert by_run["b-down"].pending_after == 2 and "unreachable" in (by_run["b-down"].error or "")
    assert by_run["c-unknown"].pending_after == 1 and "--influx-url" in (by_run["c-unknown"].error or "")
    assert (report.pending_before, report.delivered, report.pending_after) == (
        6,
        3,
        3,
    ) and not report.complete
    assert sinks["http://127.0.0.1:1001"].lines == points("orchestrator", 3)

    overridden = flush_runs(
        [find_pending(unknown)], influx_override={"url": "http://127.0.0.1:1001"}, open_sink_for=open_sink_for
    )
    assert overridden.complete and overridden.delivered == 1
    skipped = flush_runs(
        [find_pending(down)], only_server="http://localhost:1001", open_sink_for=open_sink_for
    )
    assert skipped.runs[0].skipped and skipped.runs[0].pending_after == 2


def test_preflight_flush_takes_only_runs_bound_for_its_influx_and_never_raises(tmp_path: Path) -> None:
    mine = make_run(tmp_path, "a-mine", spools={"eu-1": 8}, unsent=2)
    write_sink_settings(mine, {"url": "http://localhost:8086", "database": "spike"})
    other = make_run(tmp_path, "b-other", unsent=2)
    write_sink_settings(other, {"url": "http://127.0.0.1:8086", "database": "elsewhere"})
    broken = make_run(tmp_path, "c-broken", unsent=1)
    (broken / SINK_SETTINGS_FILE).write_text("{")
    sink = RecordingSink()
    report = flush_pending_quietly(tmp_path, sink, {"url": "http://127.0.0.1:8086"})
    by_run = {r.run_id: r for r in report.runs}
    assert by_run["a-mine"].delivered == 10 and by_run["a-mine"].pending_after == 0
    assert "b-other" not in by_run and pending_points(other) == 2
    assert by_run["c-broken"].pending_after == 1 and "JSON" in (by_run["c-broken"].error or "")
    # out of time: stops between batches, keeps the rest
    late = make_run(tmp_path, "d-late", unsent=3)
    write_sink_settings(late, {"url": "http://127.0.0.1:8086"})
    timed_out = flush_pending_quietly(
        tmp_path, RecordingSink(), {"url": "http://127.0.0.1:8086"}, timeout_s=0
    )
    assert {r.run_id: r.pending_after for r in timed_out.runs}["d-late"] == 3
    assert flush_pending_quietly(tmp_path / "missing", sink, {"url": "http://127.0.0.1:8086"}).runs == ()


def test_cli_pending_and_flush_exit_codes(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runner = CliRunner()
    result = runner.invoke(app, ["metrics", "pending", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0 and "nothing pending" in result.output
    run_dir = make_run(runs_dir, "r-9", spools={"eu-1": 5}, unsent=2)
    write_sink_settings(run_dir, {"url": "http://127.0.0.1:1", "timeout_s": 0.5})
    result = runner.invoke(app, ["metrics", "pending", "--runs-dir", str(runs_dir)])
    assert (
        result.exit_code == 0 and "r-9: 7 points pending (eu-1 spool 5, unsent-points.lp 2)" in result.output
    )
    listed = json.loads(
        runner.invoke(app, ["metrics", "pending", "--runs-dir", str(runs_dir), "--json"]).output
    )
    assert listed["points"] == 7 and RunPending(run_dir).run_id == listed["runs"][0]["run_id"]
    result = runner.invoke(app, ["metrics", "flush", "r-404", "--runs-dir", str(runs_dir)])
    assert result.exit_code == ExitCode.BAD_INPUT and "r-404" in result.output
    result = runner.invoke(app, ["metrics", "flush", "r-9", "--runs-dir", str(runs_dir)])
    assert result.exit_code == ExitCode.INFRASTRUCTURE, result.output
    assert "r-9: 7 points pending, 0 delivered to http://127.0.0.1:1, 7 still pending" in result.output
    assert "unreachable" in result.output and pending_points(run_dir) == 7
