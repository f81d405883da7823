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

On Linux every field is read from /proc, so the agent needs nothing beyond the standard library
and runs as-is on a remote injector's stock Python 3 (it is shipped there as a zipapp). psutil is
used only where there is no /proc.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from loadorch.metrics.schema import INJECTOR_HEALTH, line

_SOCKSTAT = (Path("/proc/net/sockstat"), Path("/proc/net/sockstat6"))
_PROC = Path("/proc")


class Counters(NamedTuple):
    """Cumulative host counters; health fields are differences between two of them."""

    cpu_busy: float
    cpu_total: float
    net_sent: int
    net_recv: int


def proc_counters(proc: Path = _PROC) -> Counters:
    """CPU jiffies from /proc/stat and interface bytes from /proc/net/dev (all interfaces)."""
    cpu = [float(x) for x in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    total = sum(cpu[:8])
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0.0)
    sent = recv = 0
    for row in (proc / "net" / "dev").read_text().splitlines()[2:]:
        _, _, numbers = row.partition(":")
        values = numbers.split()
        if len(values) >= 9:
            recv += int(values[0])
            sent += int(values[8])
    return Counters(total - idle, total, sent, recv)


def proc_memory_used_pct(proc: Path = _PROC) -> float:
    """(MemTotal - MemAvailable) / MemTotal, as psutil's `virtual_memory().percent` computes it."""
    info = {}
    for row in (proc / "meminfo").read_text().splitlines():
        key, _, rest = row.partition(":")
        info[key] = float(rest.split()[0]) if rest.split() else 0.0
    total = info.get("MemTotal", 0.0)
    return round(100.0 * (total - info.get("MemAvailable", total)) / total, 1) if total else 0.0


def _psutil_counters() -> Counters:  # pragma: no cover - only where there is no /proc
    import psutil

    times = psutil.cpu_times()
    total = float(sum(times))
    idle = times.idle + getattr(times, "iowait", 0.0)
    net = psutil.net_io_counters()
    return Counters(total - idle, total, net.bytes_sent, net.bytes_recv)


def _counters() -> Counters:
    return proc_counters() if (_PROC / "stat").is_file() else _psutil_counters()


def _memory_used_pct() -> float:
    if (_PROC / "meminfo").is_file():
        return proc_memory_used_pct()
    import psutil  # pragma: no cover - only where there is no /proc

    return float(psutil.virtual_memory().percent)  # pragma: no cover


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
    import psutil

    try:
        return sum(1 for c in psutil.net_connections(kind="tcp") if c.status != psutil.CONN_TIME_WAIT)
    except (psutil.Error, OSError):
        return 0


class HealthSampler:
    """Produces one `injector_health` line per call; deltas are relative to the previous call."""

    def __init__(self, tags: Mapping[str, str], *, host: str | None = None) -> None:
        """`tags`: run_id, region, injector; `host` defaults to this machine's host name."""
        self._tags = {**tags, "host": host or socket.gethostname()}
        # every field is relative to the previous call; the first one only primes the counters
        self._last = _counters()

    def fields(self) -> dict[str, float | int | str | bool]:
        """The health fields now (see the module docstring)."""
        now = _counters()
        last, self._last = self._last, now
        sent = max(now.net_sent - last.net_sent, 0)
        recv = max(now.net_recv - last.net_recv, 0)
        ticks = now.cpu_total - last.cpu_total
        cpu_pct = (
            round(min(100.0, max(0.0, 100.0 * (now.cpu_busy - last.cpu_busy) / ticks)), 1) if ticks else 0.0
        )
        return {
            "cpu_pct": cpu_pct,
            "load1": os.getloadavg()[0],
            "mem_used_pct": _memory_used_pct(),
            "net_sent_bytes": sent,
            "net_recv_bytes": recv,
            "tcp_connections": tcp_sockets_in_use(),
        }

    def sample(self, ts_ms: int) -> str:
        """One line-protocol line for this instant (the caller owns the clock)."""
        return line(INJECTOR_HEALTH, self._tags, self.fields(), ts_ms)
