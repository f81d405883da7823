"""Live metrics for a run: one agent beside every injector, and the run's own points.

Gatling's Graphite writer -> the injector's agent -> InfluxDB (spooled to disk while
InfluxDB is away). The orchestrator itself writes the planned curve at the start and
the run's events and exact final statistics at the end. Secrets never appear here:
the agents and the sinks read them from the environment or from files.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadorch.errors import InjectorError, PreflightError, SpikeError
from loadorch.livestream import TapFile
from loadorch.metrics.influx import InfluxSettings, make_sink
from loadorch.metrics.pending import append_unsent, find_pending
from loadorch.metrics.sink import Sink, SinkRejected, SinkUnavailable
from loadorch.plan.model import InjectorPlan
from loadorch.process import Command
from loadorch.providers.base import InjectorHandle

AGENT_READY_TIMEOUT_S = 20.0
# The end-of-run drain: every agent at once, all within AGENT_DRAIN_TIMEOUT_S (then forced). Each
# agent stops waiting for InfluxDB after AGENT_SELF_DRAIN_S, spools what is left, writes its final
# status and exits; the difference covers a write in flight (agent.STOP_TIMEOUT_S) and the exit.
AGENT_DRAIN_TIMEOUT_S = 15.0
AGENT_SELF_DRAIN_S = 10.0
_FORCED_STOP_S = 15.0  # after the bound: how long forcing a stop (SIGKILL, or a remote kill) may take
COUNTERS = ("points_written", "spooled", "replayed", "dropped")


def preflight_sink(influx: Mapping[str, Any]) -> Sink:
    """Reach InfluxDB and prove the credentials work, before any injector starts."""
    settings = InfluxSettings.from_env(**influx)
    try:
        sink = make_sink(settings)
        sink.check()
    except SinkUnavailable as exc:
        raise PreflightError(
            f"InfluxDB is unreachable: {exc.message}",
            where=settings.url,
            fix="start it (`spike stack up` for a local one), correct --influx-url, or run without --influx-url",
        ) from None
    except SinkRejected as exc:
        raise PreflightError(exc.message, where=settings.url, fix=exc.fix) from None
    return sink


def agent_command(config_path: Path | str, agent: tuple[str, ...] = ()) -> Command:
    """The agent: `agent` is the injector's way to run it (default: `python -m loadorch agent` here)."""
    prefix = agent or (sys.executable, "-m", "loadorch", "agent")
    return Command((*prefix, "--config", str(config_path)))


TAP_FILE = "agent-tap.lp"


def write_agent_config(
    workdir: Path, run_id: str, injector: InjectorPlan, influx: Mapping[str, Any] | None
) -> Path:
    """The agent's settings. Without InfluxDB it still runs: its tap feeds the terminal's live view."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "run_id": run_id,
        "region": injector.region,
        "injector": injector.id,
        "listen_port": 0,
        # no secrets: the agent reads them from the environment or files
        "sink_settings": dict(influx) if influx else None,
        "spool_dir": "agent-spool",
        "status_path": "agent-status.json",
        "tap_path": TAP_FILE,
        "drain_timeout_s": AGENT_SELF_DRAIN_S,
    }
    path = workdir / "agent.json"
    path.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    return path


def drain_agents(
    handles: Iterable[InjectorHandle], timeout_s: float = AGENT_DRAIN_TIMEOUT_S
) -> dict[str, str]:
    """Stop every metrics agent at once and wait for all of them within one bound of `timeout_s`.

    Each handle gets `handle.stop(timeout_s)` on its own thread at the same moment: SIGTERM, upon
    which the agent drains (bounded by its own `drain_timeout_s`, AGENT_SELF_DRAIN_S), spools what
    InfluxDB has not taken and exits; an agent still running after `timeout_s` is forced. So the
    drain takes as long as the slowest agent, not the sum of all. Returns the injectors whose stop
    failed, with the reason (normally empty); the teardown still stops whatever is left.
    """
    handles = list(handles)
    failures: dict[str, str] = {}

    def stop(handle: InjectorHandle) -> None:
        try:
            handle.stop(timeout_s)
        except (SpikeError, OSError) as exc:
            failures[handle.injector_id] = exc.render() if isinstance(exc, SpikeError) else str(exc)

    threads = [
        threading.Thread(target=stop, args=(h,), name=f"spike-drain-{h.injector_id}", daemon=True)
        for h in handles
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s + _FORCED_STOP_S
    for thread, handle in zip(threads, handles, strict=True):
        thread.join(max(deadline - time.monotonic(), 0.0))
        if thread.is_alive():
            failures.setdefault(
                handle.injector_id, f"still stopping after {timeout_s + _FORCED_STOP_S:.0f} s"
            )
    return failures


def read_status(workdir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((workdir / "agent-status.json").read_text()))
    except (OSError, ValueError):
        return {}


def wait_until_listening(workdir: Path, injector_id: str, alive: Any, refresh: Any = None) -> int:
    """The agent's port, once it listens (Gatling gives up on a Graphite server that is not there).

    `refresh()`, when given, brings a remote injector's status file into `workdir` first.
    """
    deadline = time.monotonic() + AGENT_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if refresh is not None:
            refresh()
        status = read_status(workdir)
        if status.get("state") == "failed":
            raise InjectorError(f"the metrics agent failed: {status.get('error')}", where=injector_id)
        if status.get("state") == "listening" and status.get("port"):
            return int(status["port"])
        if alive() is not None:
            raise InjectorError(
                f"the metrics agent exited before listening; see {workdir / 'agent.log'}", where=injector_id
            )
        time.sleep(0.05)
    raise InjectorError(
        f"the metrics agent did not listen within {AGENT_READY_TIMEOUT_S:.0f} s", where=injector_id
    )


@dataclass
class RunWriter:
    """The orchestrator's own points. A failed write is kept on disk, never lost."""

    sink: Sink
    run_dir: Path
    written: int = 0
    unsent: int = 0
    errors: list[str] = field(default_factory=list)

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.sink.write(lines)
            self.written += len(lines)
        except (SinkUnavailable, SinkRejected) as exc:
            # kept for `spike metrics flush` (and the next run's preflight, `spike stack up`)
            append_unsent(self.run_dir, lines)
            self.unsent += len(lines)
            self.errors.append(exc.message)

    def close(self) -> None:
        self.sink.close()


class TapForwarder:
    """Sends remote agents' points to InfluxDB from this machine.

    A remote injector's agent only appends its points to its tap file, which spike mirrors into
    the run directory every second. This thread tails those mirrors and writes the new lines in
    order; while InfluxDB is away they wait in memory (up to `max_pending` lines, beyond that on
    disk) and are retried; whatever is still unsent at the end goes to `unsent-points.lp`.
    """

    def __init__(
        self,
        sink: Sink,
        run_dir: Path,
        taps: list[Path],
        *,
        interval_s: float = 1.0,
        batch_lines: int = 5000,
        max_pending: int = 2_000_000,
    ) -> None:
        self.sink = sink
        self.run_dir = run_dir
        self.taps = [TapFile(path, "") for path in taps]
        self.interval_s = interval_s
        self.batch_lines = batch_lines
        self.max_pending = max_pending
        self.pending: deque[str] = deque()
        self.written = 0
        self.unsent = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spike-tap-forwarder", daemon=True)

    def start(self) -> TapForwarder:
        self._thread.start()
        return self

    def _read(self) -> None:
        for tap in self.taps:
            self.pending.extend(tap.read_lines())
        overflow = len(self.pending) - self.max_pending
        if overflow > 0:
            self._keep_on_disk([self.pending.popleft() for _ in range(overflow)])

    def _flush(self) -> bool:
        """Write everything pending; False when InfluxDB refused or was away."""
        while self.pending:
            batch = [self.pending[i] for i in range(min(self.batch_lines, len(self.pending)))]
            try:
                self.sink.write(batch)
            except (SinkUnavailable, SinkRejected) as exc:
                self.failures += 1
                self.last_error = exc.message
                return False
            for _ in batch:
                self.pending.popleft()
            self.written += len(batch)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()
            self._flush()

    def _keep_on_disk(self, lines: list[str]) -> None:
        if lines:
            append_unsent(self.run_dir, lines)
            self.unsent += len(lines)

    def stop(self, timeout_s: float) -> None:
        """Forward the last lines (retrying until `timeout_s`), then keep the rest on disk."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        self._read()
        while not self._flush() and time.monotonic() < deadline:
            time.sleep(1.0)
        self._keep_on_disk(list(self.pending))
        self.pending.clear()
        self.sink.close()

    def counters(self) -> dict[str, Any]:
        return {
            "points_written": self.written,
            "unsent": self.unsent,
            "write_failures": self.failures,
            "last_error": self.last_error,
        }


def with_pending(metrics: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """`metrics` with the pending figures recounted from the run directory.

    pending_points: every point of the run not in InfluxDB (agent spools and unsent-points.lp);
    pending: the same per place; left_in_spool: the agent spools' share. Call it again after the
    last point spike writes for the run (final events, history), or the figure misses those.
    """
    pending = find_pending(run_dir)
    return {
        **metrics,
        "left_in_spool": sum(s.points for s in pending.sources if s.kind == "spool"),
        "pending_points": pending.points,
        "pending": {s.label: s.points for s in pending.sources},
    }


def metrics_summary(
    agent_statuses: Mapping[str, Mapping[str, Any]],
    writer: RunWriter | None,
    forwarder: TapForwarder | None = None,
    *,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Points written, spooled and dropped: every agent's, spike's forwarding and the orchestrator's.

    `pending_points` is what has not reached InfluxDB, counted from the run directory itself (every
    agent spool and unsent-points.lp, `loadorch.metrics.pending`), so it is exact even for an agent
    that was killed before its last status; `spike metrics flush` delivers exactly that many.
    Count it after the last point spike writes for the run, or it misses those.
    """
    totals: dict[str, Any] = {
        name: sum(int(s.get(name, 0) or 0) for s in agent_statuses.values()) for name in COUNTERS
    }
    totals["left_in_spool"] = sum(int(s.get("spool_pending_points", 0) or 0) for s in agent_statuses.values())
    run_dir = run_dir or (writer.run_dir if writer else forwarder.run_dir if forwarder else None)
    if run_dir is not None:
        totals = with_pending(totals, run_dir)
    if forwarder is not None:
        # remote agents do not write themselves: spike forwards their points
        totals["points_written"] += forwarder.written
        totals["forwarded"] = forwarder.counters()
    return {
        **totals,
        "orchestrator_points_written": writer.written if writer else 0,
        "orchestrator_points_unsent": writer.unsent if writer else 0,
        "orchestrator_errors": writer.errors[:5] if writer else [],
        "agents": {
            name: {k: s.get(k) for k in (*COUNTERS, "state", "pending_at_exit", "last_error")}
            for name, s in agent_statuses.items()
        },
    }
