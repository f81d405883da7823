"""The agent: Gatling's Graphite metrics in, spike's InfluxDB points out, nothing lost on the way.

    Gatling --Graphite/TCP--> listener (asyncio, 127.0.0.1) --batches--> delivery thread --> Sink
                                                                              |   ^
                                                                  (unavailable)v   | (back)
                                                                              Spool (disk)

Why it is built like this:
- Gatling's Graphite sender gives up for the rest of the run after 5 failures within 5 s, so the
  listener must be up before Gatling starts, must never stop reading, and must never wait for the
  sink. The event loop only parses; every sink write happens in one delivery thread.
- Order is kept: while anything is spooled, new batches go to the end of the spool, and the
  spool is replayed oldest first, so points reach the sink in the order they arrived.
- A transient failure (SinkUnavailable, or anything unexpected from the sink) spools the batch and
  retries with exponential backoff; a permanent one (SinkRejected) drops the batch, counts it and
  keeps the reason, because retrying data the server refuses would only block the data behind it.
- `drain` is called before teardown: it waits for the injector's last bytes, completes every
  point, and waits until the sink has everything (or the time is up); what is left stays in the
  spool on disk, for the next agent started with the same spool directory or for
  `spike metrics flush` (loadorch.metrics.pending). Draining and stopping are both bounded, so
  the agent process always writes its final status, with the exact number of points it left in
  the spool, before it exits on its own.

Counters (`stats()`): points_written (all points the sink accepted, replayed ones included),
spooled (points put into the spool), replayed (points written from the spool), dropped (points
given up: rejected by the sink or refused by a full spool), plus lines, malformed lines and
connections. After a complete drain: points_received + health_points == points_written + dropped.

The tap (`tap_path`): every line-protocol line the agent produces (gatling, gatling_users,
injector_health), in the order produced, is also appended to a local file, flushed every flush
interval and at drain/stop, so a local reader (the terminal live view) tails the very stream the
sink gets. A failing tap only counts `tap_errors`; delivery to the sink goes on. Without a sink
(`sink=None`, `sink_settings` null or absent in the config file) points go only to the tap:
no spool, points_written and dropped stay 0 and sink_state is "none".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

from loadorch.agent.graphite import GraphiteDecoder, TimestampSequencer
from loadorch.agent.health import HealthSampler
from loadorch.agent.spool import DEFAULT_MAX_BYTES, Spool
from loadorch.errors import BadInputError, PreflightError, SpikeError
from loadorch.metrics.schema import GRAPHITE_PREFIX
from loadorch.metrics.sink import Sink, SinkRejected, SinkUnavailable

LISTEN_HOST = "127.0.0.1"  # Gatling runs on the same host; nothing else may feed the agent
DRAIN_RETRY_S = 0.5  # a draining agent tries an unavailable sink again at least this often
STOP_TIMEOUT_S = 3.0  # how long `stop` waits for a sink write in flight before spooling it
_REASONS_KEPT = 20  # distinct rejection reasons kept in stats (each with its point count)


@dataclass(frozen=True)
class AgentSettings:
    """How one agent runs. The tags (run_id, region, injector) go on every point it writes."""

    run_id: str
    region: str
    injector: str
    spool_dir: Path
    listen_port: int = 0  # 0: any free port (see Agent.port)
    prefix: str = GRAPHITE_PREFIX  # Gatling's gatling.data.graphite.rootPathPrefix
    batch_lines: int = 5000  # hand a batch to the sink at this many lines...
    flush_interval_s: float = 1.0  # ...or this often, whichever comes first
    max_write_lines: int = 20_000  # queued batches are merged into writes of at most this size
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    health_interval_s: float | None = 1.0  # None: no injector_health points
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 10.0
    quiet_s: float = 0.3  # drain: the stream counts as finished after this long without data
    tap_path: Path | None = None  # also append every produced line here (see the module doc)

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise BadInputError(f"agent listen port {self.listen_port} is not a TCP port (0-65535)")
        if not self.run_id or not self.injector:
            raise BadInputError("the agent needs a run_id and an injector id (they tag every point)")
        if self.batch_lines < 1 or self.max_write_lines < 1 or self.flush_interval_s <= 0:
            raise BadInputError("agent batch_lines, max_write_lines and flush_interval_s must be positive")

    @property
    def tags(self) -> dict[str, str]:
        return {"run_id": self.run_id, "region": self.region, "injector": self.injector}


class _Delivery:
    """The one thread that talks to the sink and the spool (both block; the event loop must not)."""

    def __init__(self, sink: Sink, spool: Spool, settings: AgentSettings) -> None:
        self._sink = sink
        self._spool = spool
        self._max_write = settings.max_write_lines
        self._backoff_initial = settings.backoff_initial_s
        self._backoff_max = settings.backoff_max_s
        self._backoff = settings.backoff_initial_s
        self._cond = threading.Condition()
        self._queue: deque[list[str]] = deque()
        # writes taken from the queue and not yet written, spooled or dropped (see `stop`)
        self._inflight: list[list[str]] = []
        self._busy = False
        self._stopping = False
        self._abandoned = False  # `stop` gave up waiting: this thread must not touch the spool again
        self._retry_at = 0.0  # time.monotonic() before which the sink is not tried again
        self._backoff_cap = settings.backoff_max_s
        # counters (written by the delivery thread, read under the lock)
        self.points_written = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.write_failures = 0
        self.drop_reasons: Counter[str] = Counter()
        self.last_error: str | None = None
        self.sink_state = "ok"  # ok | unavailable | rejected
        self._thread = threading.Thread(target=self._run, name="spike-agent-delivery", daemon=True)

    # -- called from the event loop (never blocks on I/O) ------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, lines: list[str]) -> None:
        with self._cond:
            self._queue.append(lines)
            self._cond.notify()

    def retry_now(self, max_backoff_s: float | None = None) -> None:
        """Skip the current backoff wait (drain wants everything out now).

        `max_backoff_s` also caps the waits from now on, so that a drain of a few seconds notices
        a sink that comes back instead of sleeping through a backoff grown during a long outage.
        """
        with self._cond:
            self._retry_at = 0.0
            if max_backoff_s is not None:
                self._backoff_cap = min(self._backoff_cap, max_backoff_s)
            self._cond.notify()

    def idle(self) -> bool:
        """Nothing queued, nothing being written, nothing spooled."""
        with self._cond:
            return not self._queue and not self._busy and not self._spool

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {
                "points_written": self.points_written,
                "spooled": self.spooled,
                "replayed": self.replayed,
                "dropped": self.dropped,
                "write_failures": self.write_failures,
                "queued_points": sum(len(b) for b in self._queue),
                "spool_pending_points": self._spool.pending_lines,
                "spool_pending_bytes": self._spool.pending_bytes,
                "sink_state": self.sink_state,
                "last_error": self.last_error,
                "drop_reasons": dict(self.drop_reasons.most_common(_REASONS_KEPT)),
            }

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop after the current write; whatever is still queued goes to the spool, not lost.

        If the thread is still stuck in a sink write after `timeout_s` (a server that accepts the
        connection and never answers), it is abandoned: every write it has not finished, the one in
        flight included, and everything queued go to the spool from here, and the spool is closed.
        Should the stuck write succeed after all, its points are in InfluxDB and in the spool; a
        later replay writes the same points again, which InfluxDB stores once. Returns False then.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            return True
        with self._cond:
            self._abandoned = True
            for lines in [*self._inflight, *self._queue]:
                self._append_to_spool(lines)
            self._inflight.clear()
            self._queue.clear()
            self._spool.close()
        return False

    # -- the delivery thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    if self._spool and time.monotonic() >= self._retry_at:
                        break
                    wait = max(self._retry_at - time.monotonic(), 0.01) if self._spool else None
                    self._cond.wait(wait)
                batches = list(self._queue)
                self._queue.clear()
                stopping = self._stopping
                self._busy = True
                if not stopping:
                    self._inflight = _chunks(batches, self._max_write)
            try:
                if stopping:
                    for batch in batches:
                        self._to_spool(batch)
                    return
                while True:
                    with self._cond:
                        if not self._inflight or self._abandoned:
                            break
                        chunk = self._inflight[0]
                    self._deliver(chunk)
                    with self._cond:
                        if self._inflight and self._inflight[0] is chunk:
                            self._inflight.pop(0)
                if not batches:
                    self._replay()
            except Exception as exc:  # pragma: no cover - a bug here must not kill delivery
                self._count_error(f"agent delivery error: {exc!r}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, lines: list[str]) -> None:
        if self._spool or time.monotonic() < self._retry_at:
            # an outage is in progress: queue behind what is already waiting, keeping the order
            self._to_spool(lines)
            self._replay()
            return
        if self._write(lines) == "unavailable":
            self._to_spool(lines)

    def _replay(self) -> None:
        while self._spool and time.monotonic() >= self._retry_at and not self._stopping:
            with self._cond:  # spool calls under the lock: snapshot() reads the spool from other threads
                batch = None if self._abandoned else self._spool.peek()
            if batch is None:
                break
            outcome = self._write(batch)
            if outcome == "unavailable":
                break
            with self._cond:
                if self._abandoned:  # the spool is closed; the batch is still in it (at-least-once)
                    break
                self._spool.ack()  # written, or rejected for good (counted as dropped in _write)
                if outcome == "ok":
                    self.replayed += len(batch)

    def _write(self, lines: Sequence[str]) -> str:
        try:
            self._sink.write(lines)
        except SinkRejected as exc:
            reason = exc.render().splitlines()[0]
            with self._cond:
                self.dropped += len(lines)
                self.drop_reasons[f"rejected by the sink: {reason}"] += len(lines)
                self.last_error = exc.render()
                self.sink_state = "rejected"
            return "rejected"
        except Exception as exc:
            # SinkUnavailable, and anything unexpected: transient until proven otherwise
            message = exc.render() if isinstance(exc, SinkUnavailable) else f"unexpected sink error: {exc!r}"
            with self._cond:
                self.write_failures += 1
                self.last_error = message
                self.sink_state = "unavailable"
                self._retry_at = time.monotonic() + min(self._backoff, self._backoff_cap)
                self._backoff = min(self._backoff * 2, self._backoff_max)
            return "unavailable"
        with self._cond:
            self.points_written += len(lines)
            self.sink_state = "ok"
            self._backoff = self._backoff_initial
        return "ok"

    def _to_spool(self, lines: list[str]) -> None:
        with self._cond:
            if not self._abandoned:  # else `stop` has spooled these lines already
                self._append_to_spool(lines)

    def _append_to_spool(self, lines: list[str]) -> None:
        """Under the lock."""
        if self._spool.append(lines):
            self.spooled += len(lines)
            return
        why = self._spool.last_error or f"spool full ({self._spool.max_bytes} bytes)"
        self.dropped += len(lines)
        self.drop_reasons[f"not spooled: {why}"] += len(lines)

    def _count_error(self, message: str) -> None:
        with self._cond:
            self.last_error = message


_SINKLESS_SNAPSHOT: dict[str, Any] = {
    "points_written": 0,
    "spooled": 0,
    "replayed": 0,
    "dropped": 0,
    "write_failures": 0,
    "queued_points": 0,
    "spool_pending_points": 0,
    "spool_pending_bytes": 0,
    "sink_state": "none",
    "last_error": None,
    "drop_reasons": {},
}


def _chunks(batches: list[list[str]], limit: int) -> list[list[str]]:
    """Merge consecutive batches into writes of at most `limit` lines (fewer round trips)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    for batch in batches:
        for start in range(0, len(batch), limit):
            part = batch[start : start + limit]
            if current and len(current) + len(part) > limit:
                chunks.append(current)
                current = []
            current.extend(part)
    if current:
        chunks.append(current)
    return chunks


class _GraphiteProtocol(asyncio.Protocol):
    """One Gatling connection: bytes -> decoder -> the agent's pending lines."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.decoder = agent._new_decoder()
        self.transport: asyncio.BaseTransport | None = None
        self.last_data = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._agent._connection_made(self)

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        self._agent._add_points(self.decoder.feed(data))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset (Gatling's JVM exiting) arrives after the bytes sent before it: nothing is lost.
        self._agent._add_points(self.decoder.finish())
        self._agent._connection_lost(self)


class Agent:
    """Listens for Gatling's Graphite metrics on 127.0.0.1 and delivers them to a Sink.

    Use from an event loop: `await start()`, then `port`; `await drain(timeout_s)` before teardown;
    `await stop()`. `AgentThread` runs one in a background thread for synchronous callers.
    """

    def __init__(
        self, settings: AgentSettings, sink: Sink | None, *, health: HealthSampler | None = None
    ) -> None:
        self.settings = settings
        self._sink = sink
        # no sink: no spool and no delivery thread, points go to the tap only
        self._spool: Spool | None = None
        self._delivery: _Delivery | None = None
        if sink is not None:
            self._spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
            self._delivery = _Delivery(sink, self._spool, settings)
        self._tap: IO[str] | None = None  # the open tap file (buffered text), opened on first use
        self._tap_lines = 0
        self._tap_errors = 0
        self._tap_last_error: str | None = None
        self._sequencer = TimestampSequencer()
        self._health = health
        self._server: asyncio.Server | None = None
        self._connections: set[_GraphiteProtocol] = set()
        self._pending: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._health_task: asyncio.Task[None] | None = None
        self._state = "created"
        self._port: int | None = None
        # counters owned by the event loop
        self._points_received = 0
        self._health_points = 0
        self._health_errors = 0
        self._connections_total = 0
        self._lines_closed = 0  # lines / malformed of connections already closed
        self._malformed_closed = 0
        self._last_malformed: str | None = None
        self._last_data = 0.0

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful with listen_port=0)."""
        if self._port is None:
            raise RuntimeError("the agent is not listening yet; await start() first")
        return self._port

    @property
    def state(self) -> str:
        return self._state

    async def start(self) -> int:
        """Start listening and delivering; returns the port. Raises PreflightError if it is taken."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _GraphiteProtocol(self), LISTEN_HOST, self.settings.listen_port, reuse_address=True
            )
        except OSError as exc:
            if self._spool is not None:
                self._spool.close()
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"the agent cannot listen on {LISTEN_HOST}:{self.settings.listen_port}: the port is busy",
                    where=f"injector {self.settings.injector}",
                    fix="stop the process using it or let spike choose another port",
                ) from exc
            raise PreflightError(
                f"the agent cannot listen on {LISTEN_HOST}:{self.settings.listen_port}: {exc}",
                where=f"injector {self.settings.injector}",
            ) from exc
        self._port = int(self._server.sockets[0].getsockname()[1])
        if self._delivery is not None:
            self._delivery.start()
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="spike-agent-flush"))
        if self.settings.health_interval_s:
            if self._health is None:
                self._health = HealthSampler(self.settings.tags)
            self._health_task = asyncio.create_task(self._health_loop(), name="spike-agent-health")
            self._tasks.append(self._health_task)
        self._state = "listening"
        return self._port

    def stop_health(self) -> None:
        """No more injector_health points: once the injector is done they only add to the backlog."""
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Deliver everything received so far (used before teardown); returns `stats()`.

        Waits until nothing has arrived for `quiet_s` (an injector that just exited may still have
        bytes in flight), completes every point, then waits until the sink has accepted everything
        or `timeout_s` is over (the rest stays spooled on disk). Listening goes on. While it waits,
        the sink is retried at least every `DRAIN_RETRY_S`, whatever backoff the outage had reached.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        previous = self._state
        self._state = "draining"
        try:
            # The injector may have just exited: its last bytes (even its connection) may still
            # wait in the kernel for the event loop. Let them arrive and be parsed first: wait until
            # nothing has arrived for quiet_s, counted from the start of the drain at the earliest.
            started = time.monotonic()
            while time.monotonic() - max(self._last_data, started) < self.settings.quiet_s:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.02)
            self._flush(close_points=True)
            self._tap_flush()
            if self._delivery is not None:
                self._delivery.retry_now(max_backoff_s=DRAIN_RETRY_S)
                while not self._delivery.idle() and loop.time() < deadline:
                    await asyncio.sleep(0.02)
        finally:
            if self._state == "draining":
                self._state = previous
        return self.stats()

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, Any]:
        """Stop listening and delivering. Undelivered points are kept in the spool; returns `stats()`.

        Bounded: a sink write still hanging after `timeout_s` is abandoned, its points spooled.
        """
        if self._state == "stopped":
            return self.stats()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                if connection.transport is not None:
                    connection.transport.close()
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run
        self._flush(close_points=True)
        self._tap_close()
        if self._delivery is not None and self._spool is not None:
            stopped = await asyncio.get_running_loop().run_in_executor(None, self._delivery.stop, timeout_s)
            if stopped:  # else the delivery thread was abandoned and closed the spool itself
                self._spool.close()
        self._state = "stopped"
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """All counters, JSON-ready."""
        lines = self._lines_closed + sum(c.decoder.lines for c in self._connections)
        malformed = self._malformed_closed + sum(c.decoder.malformed for c in self._connections)
        last_malformed = self._last_malformed
        for connection in self._connections:
            last_malformed = connection.decoder.last_malformed or last_malformed
        return {
            "state": self._state,
            "port": self._port,
            "run_id": self.settings.run_id,
            "region": self.settings.region,
            "injector": self.settings.injector,
            "connections_open": len(self._connections),
            "connections_total": self._connections_total,
            "lines_received": lines,
            "malformed_lines": malformed,
            "last_malformed": last_malformed,
            "points_received": self._points_received,
            "health_points": self._health_points,
            "health_errors": self._health_errors,
            "pending_points": len(self._pending),
            **(self._delivery.snapshot() if self._delivery is not None else _SINKLESS_SNAPSHOT),
            "spool_dir": str(self.settings.spool_dir),
            "tap_path": str(self.settings.tap_path) if self.settings.tap_path is not None else None,
            "tap_lines": self._tap_lines,
            "tap_errors": self._tap_errors,
            "tap_last_error": self._tap_last_error,
        }

    # -- event loop internals ------------------------------------------------------------------

    def _new_decoder(self) -> GraphiteDecoder:
        return GraphiteDecoder(self.settings.tags, prefix=self.settings.prefix, sequencer=self._sequencer)

    def _connection_made(self, connection: _GraphiteProtocol) -> None:
        self._connections.add(connection)
        self._connections_total += 1
        self._last_data = time.monotonic()

    def _connection_lost(self, connection: _GraphiteProtocol) -> None:
        self._connections.discard(connection)
        self._lines_closed += connection.decoder.lines
        self._malformed_closed += connection.decoder.malformed
        self._last_malformed = connection.decoder.last_malformed or self._last_malformed

    def _add_points(self, lines: list[str]) -> None:
        self._last_data = time.monotonic()
        if not lines:
            return
        self._points_received += len(lines)
        self._pending.extend(lines)
        if len(self._pending) >= self.settings.batch_lines:
            self._flush(close_points=False)

    def _flush(self, *, close_points: bool) -> None:
        if close_points:
            for connection in self._connections:
                closed = connection.decoder.close_open_point()
                self._points_received += len(closed)
                self._pending.extend(closed)
        if self._pending:
            batch, self._pending = self._pending, []
            self._tap_write(batch)
            if self._delivery is not None:
                self._delivery.submit(batch)

    # The tap: buffered appends on the event loop (cheap), one flush per flush interval.

    def _tap_write(self, batch: list[str]) -> None:
        path = self.settings.tap_path
        if path is None:
            return
        try:
            if self._tap is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._tap = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
            self._tap.write("\n".join(batch) + "\n")
            self._tap_lines += len(batch)
        except Exception as exc:  # the tap is a convenience: never let it stop delivery
            self._tap_failed(exc)

    def _tap_flush(self) -> None:
        if self._tap is None:
            return
        try:
            self._tap.flush()
        except Exception as exc:
            self._tap_failed(exc)

    def _tap_close(self) -> None:
        self._tap_flush()
        if self._tap is not None:
            with contextlib.suppress(Exception):
                self._tap.close()
            self._tap = None

    def _tap_failed(self, exc: Exception) -> None:
        self._tap_errors += 1
        self._tap_last_error = f"tap {self.settings.tap_path}: {exc}"
        if self._tap is not None:  # reopen on the next write (the file may have been removed)
            with contextlib.suppress(Exception):
                self._tap.close()
            self._tap = None

    async def _flush_loop(self) -> None:
        interval = self.settings.flush_interval_s
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in self._connections:
                # an incomplete point on a quiet connection will not be completed by more data
                if connection.decoder.has_open_point and now - connection.last_data >= self.settings.quiet_s:
                    closed = connection.decoder.close_open_point()
                    self._points_received += len(closed)
                    self._pending.extend(closed)
            self._flush(close_points=False)
            self._tap_flush()

    async def _health_loop(self) -> None:
        assert self._health is not None and self.settings.health_interval_s
        interval = self.settings.health_interval_s
        # sample on whole multiples of the interval, so every injector's health lines up in time
        while True:
            await asyncio.sleep(interval - (time.time() % interval))
            try:
                sample = self._health.sample(int(time.time() * 1000))
            except Exception:  # psutil on an odd platform: health is a nicety, metrics are not
                self._health_errors += 1
                continue
            self._health_points += 1
            self._pending.append(sample)


class AgentThread:
    """An Agent on its own event loop in a background thread, for synchronous callers and tests."""

    def __init__(self, settings: AgentSettings, sink: Sink | None) -> None:
        self.agent = Agent(settings, sink)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="spike-agent-loop", daemon=True)

    def start(self, timeout_s: float = 10.0) -> int:
        """Start listening; returns the port. On failure the loop thread is gone again."""
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self.agent.start(), self._loop).result(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return self.agent.port

    def drain(self, timeout_s: float) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(self.agent.drain(timeout_s), self._loop).result(
            timeout_s + 10
        )

    def stats(self) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(_call(self.agent.stats), self._loop).result(10)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, Any]:
        if not self._thread.is_alive():
            return self.agent.stats()
        try:
            return asyncio.run_coroutine_threadsafe(self.agent.stop(timeout_s), self._loop).result(
                timeout_s + 30
            )
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> AgentThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return func()


# -- the `spike agent --config FILE` process ---------------------------------------------------


@dataclass(frozen=True)
class AgentConfig:
    """The agent process's JSON settings file. Relative paths are relative to that file.

    {"run_id": "...", "region": "eu-west-2", "injector": "eu-west-2-1", "listen_port": 2003,
     "sink_settings": "influx.json",            # or the settings object inline; null/absent: no sink
     "spool_dir": "spool", "status_path": "agent-status.json", "tap_path": "agent-tap.lp",
     "drain_timeout_s": 10, "status_interval_s": 2, "health_interval_s": 1, "prefix": "spike"}
    """

    agent: AgentSettings
    sink_settings: dict[str, Any] | None  # None: no sink, points go to the tap only
    status_path: Path
    drain_timeout_s: float = 10.0
    status_interval_s: float = 2.0

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        path = Path(path)
        where = str(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise BadInputError(f"cannot read the agent settings: {exc.strerror}", where=where) from exc
        except ValueError as exc:
            raise BadInputError(f"the agent settings are not valid JSON: {exc}", where=where) from exc
        if not isinstance(data, dict):
            raise BadInputError("the agent settings must be a JSON object", where=where)
        base = path.parent
        known = {f.name for f in fields(AgentSettings)} | {
            "sink_settings",
            "status_path",
            "drain_timeout_s",
            "status_interval_s",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(
                f"unknown agent setting(s): {', '.join(unknown)}", where=where, fix=f"valid: {sorted(known)}"
            )
        sink_settings = data.pop("sink_settings", None)
        if isinstance(sink_settings, str):
            sink_path = base / sink_settings
            try:
                sink_settings = json.loads(sink_path.read_text())
            except (OSError, ValueError) as exc:
                raise BadInputError(f"cannot read the sink settings: {exc}", where=str(sink_path)) from exc
        if sink_settings is not None and not isinstance(sink_settings, dict):
            raise BadInputError(
                "sink_settings must name a JSON file, be a JSON object or be null", where=where
            )
        status_path = base / data.pop("status_path", "agent-status.json")
        extra = {k: data.pop(k) for k in ("drain_timeout_s", "status_interval_s") if k in data}
        data["spool_dir"] = base / data.get("spool_dir", f"spool-{data.get('injector', 'agent')}")
        if data.get("tap_path") is not None:
            data["tap_path"] = base / data["tap_path"]
        try:
            settings = AgentSettings(**data)
        except TypeError as exc:
            raise BadInputError(f"incomplete agent settings: {exc}", where=where) from exc
        except BadInputError as exc:
            raise BadInputError(exc.message, where=where, fix=exc.fix) from exc
        return cls(settings, sink_settings, status_path, **extra)


class _LazySink:
    """Creates the real sink on first use, so the listener is up even while InfluxDB is down.

    Creating an InfluxDB sink may ask the server for its version; if that fails the agent must
    still accept Gatling's connection (else Gatling gives up), so creation is retried like a write.
    """

    def __init__(self, factory: Callable[[], Sink]) -> None:
        self._factory = factory
        self._sink: Sink | None = None

    def _get(self) -> Sink:
        if self._sink is None:
            try:
                self._sink = self._factory()
            except (SinkUnavailable, SinkRejected):
                raise
            except SpikeError as exc:  # bad settings do not get better by retrying
                raise SinkRejected(exc.message, where=exc.where, fix=exc.fix) from exc
        return self._sink

    def write(self, lines: Sequence[str]) -> None:
        self._get().write(lines)

    def check(self) -> str:
        return self._get().check()

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


def influx_sink_factory(settings: Mapping[str, Any]) -> Callable[[], Sink]:
    """Validate InfluxDB settings now (no network); the returned factory makes the sink later.

    Thin glue over `loadorch.metrics.influx`: `settings` are `InfluxSettings.from_env` keywords
    (url, api, database, bucket, org, username, token_file, password_file, timeout_s), so secrets
    come from files or the environment, never from the settings file.
    """
    from loadorch.metrics.influx import InfluxSettings, make_sink

    try:
        influx = InfluxSettings.from_env(**settings)
    except TypeError as exc:
        raise BadInputError(f"invalid InfluxDB settings for the agent: {exc}") from exc
    return lambda: make_sink(influx)


def _write_status(path: Path, stats: Mapping[str, Any]) -> None:
    """Atomically replace the status file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**stats, "pid": os.getpid(), "updated_at_ms": int(time.time() * 1000)}))
    os.replace(tmp, path)


def exit_status(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The status an agent leaves behind: "drained", or "stopped" with `pending_at_exit` points spooled.

    `pending_at_exit` counts the points still waiting in the spool (and, should a bug leave any,
    in memory): exactly what a later `spike metrics flush` has to deliver for this injector.
    """
    left = sum(int(stats.get(k, 0) or 0) for k in ("spool_pending_points", "queued_points", "pending_points"))
    return {**stats, "state": "drained" if left == 0 else "stopped", "pending_at_exit": left}


async def _report_status(config: AgentConfig, agent: Agent) -> None:
    while True:
        await asyncio.sleep(config.status_interval_s)
        _write_status(config.status_path, agent.stats())


async def serve(config: AgentConfig, sink: Sink | None, stop: asyncio.Event) -> dict[str, Any]:
    """Run an agent until `stop` is set: status file when listening, periodically and at the end.

    Once `stop` is set the agent drains for at most `drain_timeout_s` (plus `STOP_TIMEOUT_S` for a
    write in flight), spools whatever the sink has not taken, and writes its final status
    (`exit_status`) before returning, so a caller that allows it a little longer than that never
    has to kill it and always finds an exact figure of what is left.
    """
    agent = Agent(config.agent, sink)
    try:
        await agent.start()
    except SpikeError as exc:
        # whoever waits for "listening" learns at once why it will not come
        _write_status(config.status_path, {**agent.stats(), "state": "failed", "error": exc.render()})
        raise
    _write_status(config.status_path, agent.stats())
    reporter = asyncio.create_task(_report_status(config, agent), name="spike-agent-status")
    try:
        await stop.wait()
        agent.stop_health()
        _write_status(config.status_path, {**agent.stats(), "state": "draining"})
        await agent.drain(config.drain_timeout_s)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        final = exit_status(await agent.stop())
        _write_status(config.status_path, final)
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
    return final


def run_agent(config_path: Path | str) -> int:
    """`spike agent --config FILE`: run until SIGTERM/SIGINT, then drain and stop. Returns the exit code.

    The status file (JSON, replaced atomically) says `"state": "listening"` and the port as soon as
    Gatling may connect; it is rewritten every `status_interval_s` and once more at exit.
    """
    config = AgentConfig.load(Path(config_path))
    sink: Sink | None = None
    if config.sink_settings is not None:
        sink = _LazySink(influx_sink_factory(config.sink_settings))

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await serve(config, sink, stop)

    asyncio.run(main())
    return 0


def main(argv: Sequence[str]) -> int:
    """`python3 spike-agent.pyz --config FILE` on a remote injector (no typer, no third-party imports)."""
    if len(argv) != 2 or argv[0] not in ("--config", "-c"):
        print("usage: spike-agent --config FILE", flush=True)
        return 2
    try:
        return run_agent(argv[1])
    except SpikeError as exc:
        print(exc.render(), flush=True)
        return 1
