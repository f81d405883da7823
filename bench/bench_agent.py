"""Benchmark: how many Gatling Graphite lines per second the agent converts and writes, on one core.

Input is what Gatling 3.11.5 sends (see loadorch/agent/graphite.py): each write period, per request
and for allRequests, ok/ko/all with count, min, max, mean, stdDev and four percentiles, plus the
users lines. `--requests 20` gives ~570 lines per period.

Three measurements:
1. decode: GraphiteDecoder alone, in process, bytes in 64 KiB chunks -> line-protocol lines,
   handed to a sink in batches of 5,000.
2. agent + null sink: the whole Agent (asyncio TCP listener on 127.0.0.1, batching, the delivery
   thread) with the agent's process pinned to one CPU; a separate sender process (pinned to
   another CPU when there is one) streams the data over loopback TCP. Timed from the start of
   sending until `drain` reports everything written.
3. agent + serialising sink: as 2, but the sink builds the request body a real InfluxDB write
   sends ("\\n".join(lines).encode("utf-8")) and checksums it, so the bytes are really produced.

Target: >= 50,000 lines/s on one core for every measurement.

Usage: ``python3 bench/bench_agent.py [--lines 1000000] [--requests 20]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadorch.agent.agent import AgentSettings, AgentThread  # noqa: E402
from loadorch.agent.graphite import GraphiteDecoder  # noqa: E402

TARGET_LINES_PER_S = 50_000
CHUNK = 64 * 1024
METRICS = ("min", "max", "mean", "stdDev", "percentiles50", "percentiles75", "percentiles95", "percentiles99")
TAGS = {"run_id": "bench-20240101-000000-abcdef", "region": "eu-west-2", "injector": "eu-west-2-1"}

_SENDER = """
import socket, sys
data = open(sys.argv[2], "rb").read()
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as conn:
    conn.sendall(data)
"""


class NullSink:
    """Accepts everything instantly: measures the agent alone."""

    def __init__(self) -> None:
        self.points = 0

    def write(self, lines: Sequence[str]) -> None:
        self.points += len(lines)

    def check(self) -> str:
        return "null"

    def close(self) -> None:
        pass


class SerializingSink(NullSink):
    """Builds (and checksums) the exact HTTP body an InfluxDB write would send."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.crc = 0

    def write(self, lines: Sequence[str]) -> None:
        body = "\n".join(lines).encode("utf-8")
        self.crc = zlib.crc32(body, self.crc)
        self.bytes += len(body)
        self.points += len(lines)


def gatling_periods(lines: int, requests: int, start_epoch: int = 1_700_000_000) -> tuple[bytes, int]:
    """At least `lines` Graphite lines as Gatling writes them, whole write periods; (data, lines)."""
    names = [f"request_{i:02d}" for i in range(requests)] + ["allRequests"]
    out: list[str] = []
    second = 0
    while len(out) < lines:
        epoch = start_epoch + second
        for scenario in ("allUsers", "social"):
            for progress, value in (("active", 120), ("waiting", 3000), ("done", 40 * second)):
                out.append(f"spike.spikesimulation.users.{scenario}.{progress} {value} {epoch}")
        for n, name in enumerate(names):
            for status in ("ok", "ko", "all"):
                base = f"spike.spikesimulation.{name}.{status}"
                out.append(f"{base}.count {20 + (n + second) % 13} {epoch}")
                out.extend(
                    f"{base}.{metric} {3 + (n * 7 + i + second) % 50} {epoch}"
                    for i, metric in enumerate(METRICS)
                )
        second += 1
    return ("\n".join(out) + "\n").encode(), len(out)


def pin(cpu: int) -> int | None:
    """Pin this process to one CPU (Linux); returns the CPU, or None where that is impossible."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        chosen = cpus[cpu % len(cpus)]
        os.sched_setaffinity(0, {chosen})
        return chosen
    except (AttributeError, OSError):
        return None


def bench_decode(data: bytes, lines: int) -> tuple[float, int]:
    sink = SerializingSink()
    decoder = GraphiteDecoder(TAGS)
    pending: list[str] = []
    started = time.perf_counter()
    for start in range(0, len(data), CHUNK):
        pending += decoder.feed(data[start : start + CHUNK])
        if len(pending) >= 5000:
            sink.write(pending)
            pending = []
    pending += decoder.finish()
    sink.write(pending)
    elapsed = time.perf_counter() - started
    assert decoder.malformed == 0 and decoder.lines == lines
    return lines / elapsed, sink.points


def bench_agent(data_path: Path, lines: int, sink: NullSink, sender_cpu: int | None) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="spike-bench-agent-") as spool:
        runner = AgentThread(
            AgentSettings(
                run_id=TAGS["run_id"],
                region=TAGS["region"],
                injector=TAGS["injector"],
                spool_dir=Path(spool),
                health_interval_s=None,
                quiet_s=0.05,
            ),
            sink,
        )
        port = runner.start()
        preexec = (lambda: os.sched_setaffinity(0, {sender_cpu})) if sender_cpu is not None else None
        started = time.perf_counter()
        sender = subprocess.Popen(
            [sys.executable, "-c", _SENDER, str(port), str(data_path)], preexec_fn=preexec
        )
        try:
            sender.wait(timeout=600)
            stats = runner.drain(600)
            elapsed = time.perf_counter() - started - 0.05  # drain's quiet period is not work
        finally:
            runner.stop()
    assert sender.returncode == 0, "the sender failed"
    assert stats["lines_received"] == lines and stats["malformed_lines"] == 0, stats
    assert stats["points_written"] == stats["points_received"] == sink.points and stats["dropped"] == 0, stats
    return lines / elapsed, sink.points


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20, help="request names per write period")
    args = parser.parse_args()

    agent_cpu = pin(0)
    cpus = len(os.sched_getaffinity(0)) if agent_cpu is None else os.cpu_count() or 1
    sender_cpu = None
    if agent_cpu is not None and cpus > 1:
        sender_cpu = next(c for c in range(cpus) if c != agent_cpu)
    data, lines = gatling_periods(args.lines, args.requests)
    print(f"input: {lines:,} Graphite lines, {len(data) / 1e6:.1f} MB, {args.requests} requests per period")
    print(f"agent pinned to CPU {agent_cpu}; sender on CPU {sender_cpu} (Python {sys.version.split()[0]})")

    results = []
    rate, points = bench_decode(data, lines)
    results.append(("decode + serialise (in process)", rate, points))
    with tempfile.NamedTemporaryFile(prefix="spike-graphite-", suffix=".txt") as handle:
        handle.write(data)
        handle.flush()
        path = Path(handle.name)
        rate, points = bench_agent(path, lines, NullSink(), sender_cpu)
        results.append(("agent over TCP, null sink", rate, points))
        rate, points = bench_agent(path, lines, SerializingSink(), sender_cpu)
        results.append(("agent over TCP, serialising sink", rate, points))

    failed = False
    for name, rate, points in results:
        ok = rate >= TARGET_LINES_PER_S
        failed |= not ok
        print(f"{name:36s} {rate:>12,.0f} lines/s  {points:>9,} points  {'OK' if ok else 'BELOW TARGET'}")
    print(f"target: >= {TARGET_LINES_PER_S:,} lines/s on one core")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
