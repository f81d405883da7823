"""The injector host's health, sampled every second into one `injector_health` point.

An overloaded injector makes a target look slow, so spike records the injector's own state next
to its Gatling metrics: CPU, load, memory, network traffic and open TCP sockets.

Fields (schema.HEALTH_FIELDS):
- cpu_pct: CPU use of the whole host since the previous sample, 0-100.
- load1: the 1-minute load average.
- mem_used_pct: memory in use, 0-100 (psutil's `virtual_memory().percent`).
- net_sent_bytes / net_recv_bytes: bytes sent / received on all interfaces since the previous
  sample (so with a 1 s interval they are bytes per second; a counter reset gives 0, not a
  negative number).
- tcp_connections: TCP sockets open in the host's network namespace, not counting TIME_WAIT.
  On Linux it comes from /proc/net/sockstat{,6}, which costs the same with 50,000 sockets as with
  5; psutil.net_connections (the fallback elsewhere) walks every process's file descriptors, far
  too slow to run every second on a busy injector.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import psutil

from loadorch.metrics.schema import INJECTOR_HEALTH, line

_SOCKSTAT = (Path("/proc/net/sockstat"), Path("/proc/net/sockstat6"))


def tcp_sockets_in_use(sockstat_paths: tuple[Path, ...] = _SOCKSTAT) -> int:
    """TCP sockets in use (IPv4 + IPv6, without TIME_WAIT)."""
    total = 0
    found = False
    for path in sockstat_paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for row in text.splitlines():
            # "TCP: inuse 7 orphan 0 tw 32 alloc 8 mem 0" / "TCP6: inuse 2"
            name, _, rest = row.partition(":")
            if name in ("TCP", "TCP6"):
                parts = rest.split()
                if "inuse" in parts:
                    total += int(parts[parts.index("inuse") + 1])
                    found = True
    if found:
        return total
    try:
        return sum(1 for c in psutil.net_connections(kind="tcp") if c.status != psutil.CONN_TIME_WAIT)
    except (psutil.Error, OSError):
        return 0


class HealthSampler:
    """Produces one `injector_health` line per call; deltas are relative to the previous call."""

    def __init__(self, tags: Mapping[str, str], *, host: str | None = None) -> None:
        """`tags`: run_id, region, injector; `host` defaults to this machine's host name."""
        self._tags = {**tags, "host": host or socket.gethostname()}
        # psutil's CPU percentage is relative to the previous call; the first call only primes it.
        psutil.cpu_percent(interval=None)
        self._net = psutil.net_io_counters()

    def fields(self) -> dict[str, float | int | str | bool]:
        """The health fields now (see the module docstring)."""
        net = psutil.net_io_counters()
        sent = max(net.bytes_sent - self._net.bytes_sent, 0)
        recv = max(net.bytes_recv - self._net.bytes_recv, 0)
        self._net = net
        return {
            "cpu_pct": psutil.cpu_percent(interval=None),
            "load1": os.getloadavg()[0],
            "mem_used_pct": psutil.virtual_memory().percent,
            "net_sent_bytes": sent,
            "net_recv_bytes": recv,
            "tcp_connections": tcp_sockets_in_use(),
        }

    def sample(self, ts_ms: int) -> str:
        """One line-protocol line for this instant (the caller owns the clock)."""
        return line(INJECTOR_HEALTH, self._tags, self.fields(), ts_ms)
