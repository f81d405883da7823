"""The end of a run: agents drain within a bound, leave an exact figure of what is left, lose nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from test_agent import EPOCH, FakeSink, connect, counts, flush, settings, wait_for

from loadorch.agent.agent import AgentConfig, AgentThread, serve
from loadorch.agent.spool import count_pending
from loadorch.providers.local import LocalInjector
from loadorch.telemetry import drain_agents


class HangingSink(FakeSink):
    """Accepts the connection and never answers (until released): a write that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, lines: Sequence[str]) -> None:
        self.calls += 1
        self.release.wait(30)


def test_a_write_hanging_at_stop_is_spooled_not_lost(tmp_path: Path) -> None:
    hanging = HangingSink()
    runner = AgentThread(settings(tmp_path), hanging)
    runner.start()
    try:
        with connect(runner.port) as conn:
            conn.sendall(flush(0, 1))
            wait_for(lambda: hanging.calls == 1)  # the first batch is in flight, and stays there
            conn.sendall(flush(1, 2))
        runner.drain(0.3)
        started = time.monotonic()
        stats = runner.stop(timeout_s=0.5)
        stopped_after_s = time.monotonic() - started
    finally:
        hanging.release.set()
    assert stopped_after_s < 3, stopped_after_s
    assert (
        stats["dropped"] == 0
        and stats["spool_pending_points"] == 8 == count_pending(tmp_path / "spool").lines
    )
    good = FakeSink()
    later = AgentThread(settings(tmp_path), good)  # the abandoned spool was closed: it opens again
    later.start()
    try:
        later.drain(5)
    finally:
        later.stop()
    assert counts(good.lines) == [(EPOCH * 1000, 1), ((EPOCH + 1) * 1000, 2)] and len(good.lines) == 8


def test_a_drain_notices_a_sink_that_comes_back_despite_a_long_backoff(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.unavailable = True
    runner = AgentThread(settings(tmp_path, backoff_initial_s=8.0, backoff_max_s=30.0), sink)
    runner.start()
    try:
        with connect(runner.port) as conn:
            conn.sendall(flush(0, 3))
        wait_for(lambda: runner.stats()["spooled"] == 4)  # failed once: the next try is 8 s away
        threading.Timer(0.2, lambda: setattr(sink, "unavailable", False)).start()
        started = time.monotonic()
        stats = runner.drain(5)
        drained_after_s = time.monotonic() - started
    finally:
        runner.stop()
    assert stats["points_written"] == 4 and stats["spool_pending_points"] == 0
    assert drained_after_s < 3, drained_after_s


def test_serve_stops_sampling_bounds_its_drain_and_reports_what_it_left(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.unavailable = True
    agent = settings(tmp_path, health_interval_s=0.05)
    config = AgentConfig(agent, {}, tmp_path / "status.json", drain_timeout_s=0.6, status_interval_s=0.05)
    seen: list[str] = []

    async def scenario() -> tuple[dict[str, object], float, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(config, sink, stop))
        while not config.status_path.exists():
            await asyncio.sleep(0.01)
        port = json.loads(config.status_path.read_text())["port"]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(flush(0, 4))
        await writer.drain()
        writer.close()
        while json.loads(config.status_path.read_text())["health_points"] < 3:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.sleep(0)
        health_at_stop = int(json.loads(config.status_path.read_text())["health_points"])
        started = time.monotonic()
        while not task.done():
            seen.append(json.loads(config.status_path.read_text())["state"])
            await asyncio.sleep(0.02)
        return await task, time.monotonic() - started, health_at_stop

    final, took_s, health_at_stop = asyncio.run(scenario())
    status = json.loads(config.status_path.read_text())
    assert "draining" in seen
    assert took_s < 0.6 + 3, took_s
    assert status["state"] == final["state"] == "stopped"
    left = count_pending(tmp_path / "spool").lines
    assert status["pending_at_exit"] == status["spool_pending_points"] == left
    assert left == status["points_received"] + status["health_points"] and status["dropped"] == 0
    assert status["health_points"] <= health_at_stop + 2  # no sampling while draining


def _agent_process(tmp_path: Path, name: str) -> tuple[LocalInjector, Path]:
    """A real `spike agent` process whose InfluxDB is unreachable, as the local provider starts it."""
    workdir = tmp_path / name
    workdir.mkdir()
    config = {
        "run_id": "r-1",
        "region": "eu",
        "injector": name,
        "sink_settings": {"url": "http://127.0.0.1:1", "api": "v1", "timeout_s": 0.5},
        "spool_dir": "agent-spool",
        "drain_timeout_s": 1.0,
        "status_interval_s": 0.1,
        "health_interval_s": None,
    }
    (workdir / "agent.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "loadorch", "agent", "--config", str(workdir / "agent.json")]
    log = (workdir / "agent.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return LocalInjector(name, process, workdir), workdir


def test_drain_agents_stops_every_agent_at_once_within_one_bound(tmp_path: Path) -> None:
    agents = [_agent_process(tmp_path, f"eu-{i}") for i in range(3)]
    stubborn_dir = tmp_path / "stubborn"
    stubborn_dir.mkdir()
    ignores_term = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(sys.argv[1], 'w').write('ready'); time.sleep(60)"
    )
    ready = stubborn_dir / "ready"
    stubborn = subprocess.Popen([sys.executable, "-c", ignores_term, str(ready)], start_new_session=True)
    try:
        for _, workdir in agents:
            status_path = workdir / "agent-status.json"
            wait_for(
                lambda p=status_path: p.exists() and bool(json.loads(p.read_text()).get("port")), timeout_s=30
            )
            with connect(json.loads(status_path.read_text())["port"]) as conn:
                conn.sendall(flush(0, 1))
            wait_for(lambda p=status_path: json.loads(p.read_text())["spooled"] == 4, timeout_s=10)
        wait_for(ready.exists, timeout_s=10)
        handles = [h for h, _ in agents] + [LocalInjector("stubborn", stubborn, stubborn_dir)]
        started = time.monotonic()
        failures = drain_agents(handles, timeout_s=4.0)
        took_s = time.monotonic() - started
    finally:
        for process in [h.process for h, _ in agents] + [stubborn]:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert failures == {}
    # one after the other this would be 3 drains plus the stubborn one's 4 s
    assert 4.0 <= took_s < 4.0 + 3, took_s
    assert stubborn.returncode == -9  # forced after the bound
    for handle, workdir in agents:
        assert handle.process.returncode == 0  # left on its own, within its own bound
        status = json.loads((workdir / "agent-status.json").read_text())
        assert status["state"] == "stopped" and status["pending_at_exit"] == 4
        assert count_pending(workdir / "agent-spool").lines == 4
