"""Benchmark the sample target with a bounded Python client, on 127.0.0.1 only.

Two measurements:

- ``throughput``: the target with unlimited capacity (capacity 100000,
  service time 0) so only its HTTP stack is measured, driven by C concurrent
  connections for a fixed number of requests, once opening a new TCP
  connection per request (as Gatling virtual users do) and once with
  keep-alive. Prints requests/s and latency percentiles.
- ``spike``: the target with its default capacity model, driven open-loop
  (arrivals at a fixed rate, one new connection each, like Gatling's
  ``constantUsersPerSec``) at a baseline rate and then ten times that rate,
  to show that baseline is comfortable and the spike degrades it.

The client runs in separate processes (``--clients``) so it does not share a
GIL with the target; with few cores the client, not the target, may be the
bottleneck, so the throughput figures are lower bounds. Every phase is bounded
by a request count and ``--time-limit``.

    python3 bench/bench_target.py                       # both, defaults
    python3 bench/bench_target.py throughput --requests 20000 --concurrency 64 --clients 2
    python3 bench/bench_target.py spike --baseline-rate 60 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from loadorch.target.server import TargetConfig, TargetServer

HOST = "127.0.0.1"  # the bench never talks to anything else


@dataclass
class Tally:
    """What one client process saw."""

    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.ok += other.ok
        self.errors += other.errors
        for code, n in other.statuses.items():
            self.statuses[code] = self.statuses.get(code, 0) + n
        self.latencies_ms.extend(other.latencies_ms)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)


class _Client(asyncio.Protocol):
    """A minimal HTTP/1.1 client connection: one outstanding request at a time."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed before the response"))

    async def exchange(self, request: bytes, timeout_s: float) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        async with asyncio.timeout(timeout_s):
            return await self.waiter


def _request(path: str, keep_alive: bool) -> bytes:
    connection = b"" if keep_alive else b"Connection: close\r\n"
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), HOST.encode(), connection)


async def _closed_loop(
    port: int, path: str, count: int, concurrency: int, keep_alive: bool, limit_s: float
) -> Tally:
    loop = asyncio.get_running_loop()
    tally = Tally()
    left = count
    deadline = time.monotonic() + limit_s
    request = _request(path, keep_alive)

    async def worker() -> None:
        nonlocal left
        conn: _Client | None = None
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            started = time.perf_counter()
            try:
                if conn is None:
                    _, conn = await loop.create_connection(_Client, HOST, port)
                status = await conn.exchange(request, timeout_s=10)
            except (OSError, TimeoutError):
                tally.errors += 1
                conn = None
                continue
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            tally.ok += status < 400
            if not keep_alive and conn.transport is not None:
                conn.transport.close()
                conn = None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.elapsed_s = time.perf_counter() - started
    return tally


async def _open_loop(port: int, path: str, rate: float, seconds: float) -> Tally:
    """Start one request (on a new connection) every 1/rate s, whatever the answers do."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    request = _request(path, keep_alive=False)

    async def one() -> None:
        started = time.perf_counter()
        try:
            transport, conn = await loop.create_connection(_Client, HOST, port)
            try:
                status = await conn.exchange(request, timeout_s=10)
            finally:
                transport.close()
        except (OSError, TimeoutError):
            tally.errors += 1
            return
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        tally.ok += status < 400

    tasks = []
    begin = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    tally.elapsed_s = time.perf_counter() - begin
    return tally


def _closed_loop_process(args: tuple[int, str, int, int, bool, float]) -> Tally:
    return asyncio.run(_closed_loop(*args))


def _open_loop_process(args: tuple[int, str, float, float]) -> Tally:
    return asyncio.run(_open_loop(*args))


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _summary(tally: Tally) -> str:
    lat = tally.latencies_ms
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(tally.statuses.items()))
    return (
        f"p50 {_percentile(lat, 50):.1f} ms  p95 {_percentile(lat, 95):.1f} ms"
        f"  p99 {_percentile(lat, 99):.1f} ms  statuses {{{codes}}}  errors {tally.errors}"
    )


def bench_throughput(args: argparse.Namespace, ctx: multiprocessing.context.SpawnContext) -> None:
    config = TargetConfig(port=0, capacity=100_000, service_time_ms=0, queue_timeout_ms=1000)
    print(
        f"throughput: {os.cpu_count()} CPUs, {args.clients} client process(es), "
        f"{args.concurrency} connections"
    )
    with TargetServer(config) as server, ctx.Pool(args.clients) as pool:
        for keep_alive in (False, True):
            count = args.requests * (args.keep_alive_factor if keep_alive else 1)
            share = [
                (
                    server.port,
                    args.path,
                    count // args.clients,
                    max(1, args.concurrency // args.clients),
                    keep_alive,
                    args.time_limit,
                )
                for _ in range(args.clients)
            ]
            before = server.stats()["connections_accepted"]
            started = time.perf_counter()
            tally = Tally()
            for part in pool.map(_closed_loop_process, share):
                tally.add(part)
            wall = time.perf_counter() - started
            done = sum(tally.statuses.values())
            label = "keep-alive         " if keep_alive else "new conn per request"
            print(
                f"  {label}  {done} requests in {wall:.2f} s = {done / wall:,.0f} req/s  "
                f"({server.stats()['connections_accepted'] - before} connections)  {_summary(tally)}"
            )


def bench_spike(args: argparse.Namespace, ctx: multiprocessing.context.SpawnContext) -> None:
    config = TargetConfig(port=0)
    capacity_rps = config.capacity / (config.service_time_ms / 1000)
    print(
        f"spike: default capacity model (capacity {config.capacity}, service {config.service_time_ms:g} ms, "
        f"queue timeout {config.queue_timeout_ms:g} ms => ~{capacity_rps:.0f} req/s), "
        "open loop, new connections"
    )
    for label, rate in (("baseline", args.baseline_rate), ("10x spike", args.baseline_rate * 10)):
        # A fresh target per phase, so the spike's queue does not leak into the baseline figures.
        with TargetServer(config) as server, ctx.Pool(1) as pool:
            tally = pool.apply(_open_loop_process, ((server.port, args.path, rate, args.seconds),))
            stats = server.stats()
        print(
            f"  {label:9}  {rate:5.0f} req/s offered  {tally.ok / tally.elapsed_s:5.0f} ok/s"
            f"  {_summary(tally)}"
            f"  max_in_flight {stats['max_in_flight']}  max_waiting {stats['max_waiting']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", choices=("all", "throughput", "spike"), default="all")
    parser.add_argument(
        "--requests", type=int, default=20_000, help="new-connection requests (default 20000)"
    )
    parser.add_argument(
        "--keep-alive-factor", type=int, default=2, help="keep-alive runs this many times more"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="connections in flight, all clients together"
    )
    parser.add_argument("--clients", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--path", default="/feed?page=1")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per phase at most")
    parser.add_argument(
        "--baseline-rate", type=float, default=60.0, help="spike: baseline arrivals per second"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="spike: seconds per phase")
    args = parser.parse_args()
    # Bounds, so a typo cannot turn the bench into a flood or exhaust ephemeral ports.
    if not (1 <= args.requests <= 200_000 and 1 <= args.concurrency <= 1000 and 1 <= args.clients <= 16):
        parser.error("--requests must be 1..200000, --concurrency 1..1000, --clients 1..16")
    if not 1 <= args.keep_alive_factor <= 10:
        parser.error("--keep-alive-factor must be 1..10")
    if not (0 < args.baseline_rate <= 300 and 0 < args.seconds <= 30 and 0 < args.time_limit <= 300):
        parser.error("--baseline-rate must be in (0, 300], --seconds in (0, 30], --time-limit in (0, 300]")
    ctx = multiprocessing.get_context("spawn")  # the target runs threads here; never fork under them
    if args.what in ("all", "throughput"):
        bench_throughput(args, ctx)
    if args.what in ("all", "spike"):
        bench_spike(args, ctx)


if __name__ == "__main__":
    main()
