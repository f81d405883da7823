"""The agent over real TCP sockets on 127.0.0.1, with an in-memory sink that can fail on purpose."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from loadorch.agent.agent import Agent, AgentConfig, AgentSettings, AgentThread, serve
from loadorch.agent.health import HealthSampler, tcp_sockets_in_use
from loadorch.errors import BadInputError, PreflightError
from loadorch.metrics.schema import HEALTH_FIELDS
from loadorch.metrics.sink import SinkRejected, SinkUnavailable

EPOCH = 1_700_000_000


class FakeSink:
    """Keeps every accepted line; can be unavailable for a while or reject everything."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.unavailable = False
        self.reject = False
        self.calls = 0
        self._lock = threading.Lock()

    def write(self, lines: Sequence[str]) -> None:
        with self._lock:
            self.calls += 1
            if self.unavailable:
                raise SinkUnavailable("influx down (test)")
            if self.reject:
                raise SinkRejected("database not found (test)")
            self.lines.extend(lines)

    def check(self) -> str:
        return "fake"

    def close(self) -> None:
        pass


def settings(tmp_path: Path, **overrides: object) -> AgentSettings:
    values: dict[str, object] = {
        "run_id": "r-1",
        "region": "eu",
        "injector": "eu-1",
        "spool_dir": tmp_path / "spool",
        "flush_interval_s": 0.05,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "quiet_s": 0.1,
        "health_interval_s": None,
        **overrides,
    }
    return AgentSettings(**values)  # type: ignore[arg-type]


def flush(second: int, count: int) -> bytes:
    """What Gatling sends for one write period of one request (plus allRequests)."""
    rows = []
    for path in ("read_feed", "allRequests"):
        rows.append(f"spike.sim.{path}.ok.count {count} {EPOCH + second}")
        for metric in ("min", "max", "mean", "stdDev", "percentiles50", "percentiles75"):
            rows.append(f"spike.sim.{path}.ok.{metric} {second % 7} {EPOCH + second}")
        rows.append(f"spike.sim.{path}.ok.percentiles95 9 {EPOCH + second}")
        rows.append(f"spike.sim.{path}.ok.percentiles99 9 {EPOCH + second}")
        rows.append(f"spike.sim.{path}.ko.count 0 {EPOCH + second}")
    return ("\n".join(rows) + "\n").encode()


def counts(lines: Sequence[str], request: str = "allRequests") -> list[tuple[int, int]]:
    """(timestamp ms, count) of the ok points of a request, in arrival order."""
    out = []
    for text in lines:
        if f"request={request}," in text and "status=ok" in text:
            fields, ts = text.split(" ")[1:]
            count = float(dict(f.split("=") for f in fields.split(","))["count"])
            out.append((int(ts), int(count)))
    return out


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def agent(tmp_path: Path, sink: FakeSink) -> Iterator[AgentThread]:
    runner = AgentThread(settings(tmp_path), sink)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_listens_on_loopback_and_delivers_grouped_points(agent: AgentThread, sink: FakeSink) -> None:
    with connect(agent.port) as conn:
        assert conn.getpeername()[0] == "127.0.0.1"
        conn.sendall(flush(0, 5) + flush(1, 7))
    stats = agent.drain(5)
    assert counts(sink.lines) == [((EPOCH + 0) * 1000, 5), ((EPOCH + 1) * 1000, 7)]
    assert len(sink.lines) == 8  # 2 seconds x 2 requests x (ok + ko)
    assert stats["points_written"] == stats["points_received"] == 8
    assert stats["lines_received"] == 40 and stats["malformed_lines"] == 0
    assert (stats["spooled"], stats["replayed"], stats["dropped"]) == (0, 0, 0)


def test_an_outage_loses_nothing_and_keeps_the_order(agent: AgentThread, sink: FakeSink) -> None:
    with connect(agent.port) as conn:
        for second in range(30):
            if second == 5:
                sink.unavailable = True
            if second == 20:
                assert agent.stats()["spooled"] > 0  # the outage really happened
                sink.unavailable = False
            conn.sendall(flush(second, second + 1))
            time.sleep(0.01)
        stats = agent.drain(10)
    assert counts(sink.lines) == [((EPOCH + s) * 1000, s + 1) for s in range(30)]
    assert len(sink.lines) == len(set(sink.lines)) == 30 * 4  # every point exactly once
    assert stats["dropped"] == 0
    assert stats["spooled"] > 0 and stats["replayed"] == stats["spooled"]
    assert stats["points_written"] == stats["points_received"] == 120
    assert stats["spool_pending_points"] == 0 and stats["write_failures"] > 0


def test_drain_waits_out_a_short_outage(agent: AgentThread, sink: FakeSink) -> None:
    sink.unavailable = True
    with connect(agent.port) as conn:
        conn.sendall(flush(0, 3))
    wait_for(lambda: agent.stats()["spooled"] == 4)
    threading.Timer(0.3, lambda: setattr(sink, "unavailable", False)).start()
    stats = agent.drain(5)
    assert stats["points_written"] == 4 and stats["replayed"] == 4 and stats["dropped"] == 0
    assert stats["sink_state"] == "ok"


def test_rejected_batches_are_dropped_counted_and_explained(agent: AgentThread, sink: FakeSink) -> None:
    sink.reject = True
    with connect(agent.port) as conn:
        conn.sendall(flush(0, 3))
    stats = agent.drain(5)
    assert stats["dropped"] == 4 and stats["points_written"] == 0 and stats["spooled"] == 0
    assert stats["sink_state"] == "rejected"
    assert "database not found" in next(iter(stats["drop_reasons"]))
    sink.reject = False  # rejection is per batch: later data flows again
    with connect(agent.port) as conn:
        conn.sendall(flush(1, 3))
    assert agent.drain(5)["points_written"] == 4


def test_malformed_lines_are_counted_and_do_not_stop_the_stream(agent: AgentThread, sink: FakeSink) -> None:
    with connect(agent.port) as conn:
        conn.sendall(b"hello\n\xff\xfe\nspike.sim.x.ok.count 1\n" + flush(0, 2))
    stats = agent.drain(5)
    assert stats["malformed_lines"] == 3 and stats["last_malformed"]
    assert counts(sink.lines) == [(EPOCH * 1000, 2)]


def test_several_connections_and_a_reconnect(agent: AgentThread, sink: FakeSink) -> None:
    with connect(agent.port) as a, connect(agent.port) as b:
        a.sendall(flush(0, 1))
        b.sendall(flush(0, 1))  # same series, same second, other connection: both kept
    with connect(agent.port) as c:
        c.sendall(flush(1, 1))
    stats = agent.drain(5)
    assert stats["connections_total"] == 3
    assert sorted(counts(sink.lines)) == [(EPOCH * 1000, 1), (EPOCH * 1000 + 1, 1), ((EPOCH + 1) * 1000, 1)]


def test_spooled_points_survive_an_agent_restart(tmp_path: Path) -> None:
    down = FakeSink()
    down.unavailable = True
    first = AgentThread(settings(tmp_path), down)
    first.start()
    with connect(first.port) as conn:
        conn.sendall(flush(0, 1) + flush(1, 2))
    first.drain(0.3)
    stats = first.stop()
    assert stats["spooled"] == 8 and stats["spool_pending_points"] == 8 and stats["points_written"] == 0

    up = FakeSink()
    second = AgentThread(settings(tmp_path), up)
    second.start()
    try:
        stats = second.drain(5)
    finally:
        second.stop()
    assert counts(up.lines) == [(EPOCH * 1000, 1), ((EPOCH + 1) * 1000, 2)]
    assert stats["replayed"] == 8 and stats["spool_pending_points"] == 0


def test_a_full_spool_counts_dropped_points(tmp_path: Path) -> None:
    down = FakeSink()
    down.unavailable = True
    runner = AgentThread(settings(tmp_path, spool_max_bytes=2000), down)
    runner.start()
    try:
        with connect(runner.port) as conn:
            for second in range(10):
                conn.sendall(flush(second, 1))
                time.sleep(0.06)  # separate batches
        stats = runner.drain(0.5)
    finally:
        runner.stop()
    assert stats["dropped"] > 0 and stats["spooled"] > 0
    assert stats["dropped"] + stats["spooled"] == 40
    assert any("spool full" in reason for reason in stats["drop_reasons"])


def test_health_points_are_written_when_enabled(tmp_path: Path, sink: FakeSink) -> None:
    runner = AgentThread(settings(tmp_path, health_interval_s=0.1), sink)
    runner.start()
    try:
        wait_for(lambda: runner.stats()["health_points"] >= 2)
        runner.drain(5)
    finally:
        runner.stop()
    # counted once the agent has stopped: a sample taken while the drain began is delivered too
    health = [text for text in sink.lines if text.startswith("injector_health,")]
    assert len(health) == runner.agent.stats()["health_points"] >= 2
    assert "injector=eu-1" in health[0] and "host=" in health[0] and "tcp_connections=" in health[0]


def test_a_busy_port_is_a_preflight_error(tmp_path: Path, sink: FakeSink) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = AgentThread(settings(tmp_path, listen_port=port), sink)
        with pytest.raises(PreflightError, match="busy"):
            runner.start()


def test_stop_without_drain_keeps_pending_points_in_the_spool(tmp_path: Path) -> None:
    sink = FakeSink()
    runner = AgentThread(settings(tmp_path, flush_interval_s=60), sink)
    runner.start()
    with connect(runner.port) as conn:
        conn.sendall(flush(0, 1))
    wait_for(lambda: runner.stats()["points_received"] == 4)
    stats = runner.stop()
    # written if the delivery thread got to it before stopping, else spooled: never lost
    assert len(sink.lines) == stats["points_written"]
    assert stats["points_written"] + stats["spool_pending_points"] == 4 and stats["dropped"] == 0
    later = AgentThread(settings(tmp_path), sink)
    later.start()
    try:
        later.drain(5)
    finally:
        later.stop()
    assert counts(sink.lines) == [(EPOCH * 1000, 1)] and len(sink.lines) == 4


def test_serve_writes_status_files_and_drains_on_stop(tmp_path: Path) -> None:
    sink = FakeSink()
    config = AgentConfig(settings(tmp_path), {}, tmp_path / "status.json", status_interval_s=0.1)

    async def scenario() -> dict[str, object]:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(config, sink, stop))
        while not config.status_path.exists():
            await asyncio.sleep(0.01)
        status = json.loads(config.status_path.read_text())
        assert status["state"] == "listening"
        _, writer = await asyncio.open_connection("127.0.0.1", status["port"])
        writer.write(flush(0, 4))
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.3)
        assert json.loads(config.status_path.read_text())["points_received"] == 4  # periodic update
        stop.set()
        return await task

    final = asyncio.run(scenario())
    status = json.loads(config.status_path.read_text())
    assert status["state"] == final["state"] == "drained" and status["pending_at_exit"] == 0
    assert status["points_written"] == 4 and status["dropped"] == 0
    assert counts(sink.lines) == [(EPOCH * 1000, 4)]


def test_agent_config_file(tmp_path: Path) -> None:
    (tmp_path / "influx.json").write_text(json.dumps({"url": "http://127.0.0.1:8086"}))
    path = tmp_path / "agent.json"
    path.write_text(
        json.dumps(
            {
                "run_id": "r",
                "region": "eu",
                "injector": "eu-1",
                "listen_port": 2003,
                "sink_settings": "influx.json",
            }
        )
    )
    config = AgentConfig.load(path)
    assert config.sink_settings == {"url": "http://127.0.0.1:8086"}
    assert config.agent.listen_port == 2003 and config.agent.spool_dir == tmp_path / "spool-eu-1"
    assert config.status_path == tmp_path / "agent-status.json"

    path.write_text(json.dumps({"run_id": "r", "region": "", "injector": "i", "sink_settings": {}, "x": 1}))
    with pytest.raises(BadInputError, match="unknown agent setting"):
        AgentConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON") as info:
        AgentConfig.load(path)
    assert info.value.where == str(path)
    path.write_text(
        json.dumps({"run_id": "r", "region": "", "injector": "i", "sink_settings": {}, "listen_port": 70000})
    )
    with pytest.raises(BadInputError, match="not a TCP port") as info:
        AgentConfig.load(path)
    assert info.value.where == str(path)


def test_agent_is_usable_directly_from_an_event_loop(tmp_path: Path) -> None:
    sink = FakeSink()

    async def scenario() -> dict[str, object]:
        agent = Agent(settings(tmp_path), sink)
        port = await agent.start()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(flush(0, 1))
        await writer.drain()
        stats = await agent.drain(5)  # the connection is still open: drain waits for it to go quiet
        writer.close()
        await agent.stop()
        return stats

    stats = asyncio.run(scenario())
    assert stats["points_written"] == 4


def test_run_agent_process_spools_while_influx_is_down_and_stops_on_sigterm(tmp_path: Path) -> None:
    # nothing listens on 127.0.0.1:1: the InfluxDB sink cannot even be created, yet the listener is up
    (tmp_path / "influx.json").write_text(
        json.dumps({"url": "http://127.0.0.1:1", "api": "v1", "timeout_s": 0.5})
    )
    config = {
        "run_id": "r-1",
        "region": "eu",
        "injector": "eu-1",
        "sink_settings": "influx.json",
        "drain_timeout_s": 0.5,
        "status_interval_s": 0.1,
        "health_interval_s": None,
    }
    (tmp_path / "agent.json").write_text(json.dumps(config))
    status_path = tmp_path / "agent-status.json"
    code = "import sys; from loadorch.agent.agent import run_agent; sys.exit(run_agent(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "agent.json")])
    try:
        wait_for(lambda: status_path.exists(), timeout_s=20)
        assert json.loads(status_path.read_text())["state"] == "listening"
        with connect(json.loads(status_path.read_text())["port"]) as conn:
            conn.sendall(flush(0, 1))
        wait_for(lambda: json.loads(status_path.read_text())["spooled"] == 4)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    status = json.loads(status_path.read_text())
    assert status["state"] == "stopped" and status["sink_state"] == "unavailable"
    assert status["spool_pending_points"] == status["pending_at_exit"] == 4 and status["dropped"] == 0
    assert "127.0.0.1:1" in status["last_error"]


def test_health_sample_fields_and_sockstat_parsing(tmp_path: Path) -> None:
    v4, v6 = tmp_path / "sockstat", tmp_path / "sockstat6"
    v4.write_text("sockets: used 21\nTCP: inuse 7 orphan 0 tw 32 alloc 8 mem 0\nUDP: inuse 1 mem 0\n")
    v6.write_text("TCP6: inuse 2\nUDP6: inuse 0\n")
    assert tcp_sockets_in_use((v4, v6)) == 9
    sampler = HealthSampler({"run_id": "r", "region": "eu", "injector": "eu-1"}, host="inj-host")
    fields = sampler.fields()
    assert set(fields) == set(HEALTH_FIELDS)
    assert 0 <= float(fields["cpu_pct"]) <= 100 and 0 < float(fields["mem_used_pct"]) <= 100
    assert int(fields["net_sent_bytes"]) >= 0 and int(fields["tcp_connections"]) >= 0
    text = sampler.sample(1_700_000_000_123)
    assert text.startswith("injector_health,host=inj-host,injector=eu-1,region=eu,run_id=r ")
    assert text.endswith(" 1700000000123")


def test_the_tap_gets_exactly_the_points_the_sink_gets_in_order(tmp_path: Path, sink: FakeSink) -> None:
    tap = tmp_path / "tap" / "agent.lp"
    runner = AgentThread(settings(tmp_path, tap_path=tap, health_interval_s=0.1), sink)
    runner.start()
    try:
        with connect(runner.port) as conn:
            for second in range(10):
                conn.sendall(flush(second, second + 1))
                time.sleep(0.02)
        wait_for(lambda: runner.stats()["health_points"] >= 1)
        stats = runner.drain(5)
    finally:
        final = runner.stop()
    assert tap.read_text().splitlines() == sink.lines
    assert any(text.startswith("injector_health,") for text in sink.lines)
    assert counts(sink.lines) == [((EPOCH + s) * 1000, s + 1) for s in range(10)]
    assert final["tap_lines"] == len(sink.lines) == stats["points_written"] and final["tap_errors"] == 0


def test_the_tap_is_readable_mid_run_within_a_flush(tmp_path: Path, sink: FakeSink) -> None:
    tap = tmp_path / "agent.lp"
    runner = AgentThread(settings(tmp_path, tap_path=tap, flush_interval_s=1.0), sink)
    runner.start()
    try:
        with connect(runner.port) as conn:
            conn.sendall(flush(0, 3) + flush(1, 4))  # second 1 closes second 0's points
            started = time.monotonic()
            wait_for(lambda: tap.exists() and len(counts(tap.read_text().splitlines())) >= 1, timeout_s=1.5)
            assert time.monotonic() - started < 1.5
            assert counts(tap.read_text().splitlines())[0] == (EPOCH * 1000, 3)
    finally:
        runner.stop()


def test_a_failing_tap_does_not_stop_delivery(tmp_path: Path, sink: FakeSink) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    runner = AgentThread(settings(tmp_path, tap_path=blocker / "tap.lp"), sink)
    runner.start()
    try:
        with connect(runner.port) as conn:
            conn.sendall(flush(0, 2))
        stats = runner.drain(5)
    finally:
        runner.stop()
    assert stats["points_written"] == 4 and counts(sink.lines) == [(EPOCH * 1000, 2)]
    assert stats["tap_errors"] >= 1 and stats["tap_lines"] == 0 and "not-a-dir" in stats["tap_last_error"]


def test_agent_config_tap_path_and_no_sink(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"run_id": "r", "region": "eu", "injector": "eu-1", "tap_path": "t/tap.lp"}))
    config = AgentConfig.load(path)
    assert config.sink_settings is None and config.agent.tap_path == tmp_path / "t" / "tap.lp"
    path.write_text(json.dumps({"run_id": "r", "region": "eu", "injector": "eu-1", "sink_settings": None}))
    config = AgentConfig.load(path)
    assert config.sink_settings is None and config.agent.tap_path is None
    path.write_text(json.dumps({"run_id": "r", "region": "eu", "injector": "eu-1", "sink_settings": 3}))
    with pytest.raises(BadInputError, match="sink_settings"):
        AgentConfig.load(path)


def test_run_agent_process_without_a_sink_writes_only_the_tap(tmp_path: Path) -> None:
    config = {
        "run_id": "r-1",
        "region": "eu",
        "injector": "eu-1",
        "tap_path": "tap.lp",
        "drain_timeout_s": 5,
        "status_interval_s": 0.1,
        "health_interval_s": None,
        "flush_interval_s": 0.2,
    }
    (tmp_path / "agent.json").write_text(json.dumps(config))
    status_path, tap = tmp_path / "agent-status.json", tmp_path / "tap.lp"
    code = "import sys; from loadorch.agent.agent import run_agent; sys.exit(run_agent(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "agent.json")])
    try:
        wait_for(lambda: status_path.exists(), timeout_s=20)
        status = json.loads(status_path.read_text())
        assert status["state"] == "listening" and status["sink_state"] == "none"
        with connect(status["port"]) as conn:
            conn.sendall(flush(0, 1) + flush(1, 2))
            wait_for(lambda: tap.exists() and len(counts(tap.read_text().splitlines())) >= 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    status = json.loads(status_path.read_text())
    assert status["state"] == "drained" and status["sink_state"] == "none"
    assert status["points_written"] == 0 and status["dropped"] == 0 and status["spooled"] == 0
    assert counts(tap.read_text().splitlines()) == [(EPOCH * 1000, 1), ((EPOCH + 1) * 1000, 2)]
    assert status["tap_lines"] == status["points_received"] == 8 == len(tap.read_text().splitlines())
    assert not (tmp_path / "spool-eu-1").exists()  # no sink: no spool either
