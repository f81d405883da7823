"""The lab's per-region latency through a real toxiproxy-server, measured on loopback.

Two regions on two loopback addresses stand in for two edge addresses of the lab (no network
namespace is needed for this part): eu-west-2 with 5 ms and ap-southeast-1 with 120 ms in front of
the real sample target. Requests through each proxy are compared with requests straight to the
target, interleaved so that a load spike on this 2-core machine hits all three alike.

Tolerance: a round trip through a region can never be faster than its latency (both halves are
slept in turn), so every sample must be at least the configured figure; the median's excess over
the direct median may be at most 5 ms + 5 %: toxiproxy's own hop (goroutine hand-offs and copies,
about 1 ms here), two Go timers that fire late by up to a millisecond each, and scheduling on a
machine that runs other tests at the same time. The median of 40 samples shrugs off the outliers.
"""

from __future__ import annotations

import http.client
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loadorch.errors import BadInputError, InfrastructureError, PreflightError
from loadorch.lab.latency import LatencyProxy, find_toxiproxy
from loadorch.target.server import TargetServer

SAMPLES = 40
REGIONS = {"eu-west-2": ("127.0.0.2", 5.0), "ap-southeast-1": ("127.0.0.3", 120.0)}


def tolerance_ms(latency_ms: float) -> float:
    return 5.0 + 0.05 * latency_ms


@pytest.fixture(scope="module")
def toxiproxy_binary() -> str:
    binary = find_toxiproxy()
    if binary is None:
        reason = "toxiproxy-server is not built: run `make toxiproxy` (or set SPIKE_TOXIPROXY to a binary)"
        print(reason)
        pytest.skip(reason)
    return binary


@pytest.fixture
def proxy(tmp_path: Path, toxiproxy_binary: str) -> Iterator[LatencyProxy]:
    server = LatencyProxy(tmp_path / "toxiproxy", toxiproxy_binary).start()
    pid = server.pid
    try:
        yield server
    finally:
        server.stop()
        assert pid is not None and not _alive(pid), f"toxiproxy-server {pid} outlived stop()"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _timed_get(conn: http.client.HTTPConnection, path: str = "/health") -> float:
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    return (time.perf_counter() - started) * 1000


def _measure(hosts: dict[str, str], port: int, samples: int = SAMPLES) -> dict[str, list[float]]:
    """Keep-alive GET /health on each host in turn, `samples` rounds; milliseconds per request."""
    conns = {name: http.client.HTTPConnection(host, port, timeout=10) for name, host in hosts.items()}
    try:
        for conn in conns.values():
            _timed_get(conn)  # the connection and the proxy's upstream dial are not measured
        times: dict[str, list[float]] = {name: [] for name in hosts}
        for _ in range(samples):
            for name, conn in conns.items():
                times[name].append(_timed_get(conn))
        return times
    finally:
        for conn in conns.values():
            conn.close()


def _add_regions(proxy: LatencyProxy, port: int) -> None:
    for name, (host, latency_ms) in REGIONS.items():
        proxy.add_region(name, (host, port), ("127.0.0.1", port), latency_ms)


def test_each_region_adds_its_latency_to_the_round_trip(proxy: LatencyProxy, target: TargetServer) -> None:
    _add_regions(proxy, target.port)
    assert proxy.regions() == {name: latency for name, (_, latency) in REGIONS.items()}

    hosts = {"direct": "127.0.0.1", **{name: host for name, (host, _) in REGIONS.items()}}
    times = _measure(hosts, target.port)
    direct = statistics.median(times["direct"])
    report = [f"direct p50 {direct:.2f} ms"]
    for name, (_, latency_ms) in REGIONS.items():
        added = statistics.median(times[name]) - direct
        report.append(f"{name}: configured {latency_ms:g} ms, added p50 {added:.2f} ms (n={SAMPLES})")
    print("; ".join(report))
    for name, (_, latency_ms) in REGIONS.items():
        added = statistics.median(times[name]) - direct
        assert min(times[name]) >= latency_ms - 0.2, f"{name} answered faster than its latency: {report}"
        assert added <= latency_ms + tolerance_ms(latency_ms), f"{name} adds too much: {report}"


def test_fresh_connections_pay_the_latency_too(proxy: LatencyProxy, target: TargetServer) -> None:
    _add_regions(proxy, target.port)
    for name, (host, latency_ms) in REGIONS.items():
        for _ in range(5):
            conn = http.client.HTTPConnection(host, target.port, timeout=10)
            try:
                elapsed = _timed_get(conn)
            finally:
                conn.close()
            assert elapsed >= latency_ms - 0.2, f"{name}: a new connection's request took {elapsed:.2f} ms"


def test_half_of_the_latency_delays_the_request_and_half_the_answer(
    proxy: LatencyProxy, toxiproxy_binary: str
) -> None:
    # A raw TCP echo that notes when each request arrives: the request's way and the answer's way
    # are timed apart on one clock (this process's).
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    arrivals: list[float] = []

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(64):
                arrivals.append(time.perf_counter())
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    proxy.add_region("ap-southeast-1", ("127.0.0.4", port), ("127.0.0.1", port), 120.0)
    there, back = [], []
    with socket.create_connection(("127.0.0.4", port), timeout=10) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(8):
            sent = time.perf_counter()
            client.sendall(b"ping")
            assert client.recv(64) == b"ping"
            received = time.perf_counter()
            there.append(arrivals[-1] - sent)
            back.append(received - arrivals[-1])
    thread.join(timeout=10)
    listener.close()
    there_ms, back_ms = statistics.median(there) * 1000, statistics.median(back) * 1000
    print(f"120 ms round trip: request way p50 {there_ms:.2f} ms, answer way p50 {back_ms:.2f} ms")
    for way, value in (("request", there_ms), ("answer", back_ms)):
        assert 60.0 - 0.2 <= value <= 60.0 + tolerance_ms(60.0), f"{way} way took {value:.2f} ms"


def test_set_latency_changes_open_connections(proxy: LatencyProxy, target: TargetServer) -> None:
    proxy.add_region("eu-west-2", ("127.0.0.2", target.port), ("127.0.0.1", target.port), 5.0)
    conn = http.client.HTTPConnection("127.0.0.2", target.port, timeout=10)
    try:
        _timed_get(conn)  # the connection and the proxy's upstream dial are not measured
        before = [_timed_get(conn) for _ in range(9)]
        proxy.set_latency("eu-west-2", 80.0, jitter_ms=4.0)
        after = [_timed_get(conn) for _ in range(9)]
    finally:
        conn.close()
    # The 5 ms figure itself is measured against direct requests above; here: before, far below 80.
    assert min(before) >= 5.0 - 0.2 and statistics.median(before) < 40.0, before
    assert min(after) >= 80.0 - 4.0 - 0.2, after
    assert statistics.median(after) <= 80.0 + 4.0 + tolerance_ms(80.0), after
    assert proxy.regions() == {"eu-west-2": 80.0}
    assert proxy.region("eu-west-2").jitter_ms == 4.0


def test_cut_refuses_the_region_and_restore_brings_it_back_with_its_latency(
    proxy: LatencyProxy, target: TargetServer
) -> None:
    _add_regions(proxy, target.port)
    port = target.port
    open_conn = http.client.HTTPConnection("127.0.0.3", port, timeout=10)
    _timed_get(open_conn)

    proxy.cut("ap-southeast-1")
    assert proxy.region("ap-southeast-1").enabled is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.3", port), timeout=5).close()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        _timed_get(open_conn)  # the connection it carried is closed too
    open_conn.close()
    # The other region is untouched.
    conn = http.client.HTTPConnection("127.0.0.2", port, timeout=10)
    try:
        _timed_get(conn)
    finally:
        conn.close()
    assert proxy.regions() == {"eu-west-2": 5.0, "ap-southeast-1": 120.0}  # kept for restore

    proxy.restore("ap-southeast-1")
    assert proxy.region("ap-southeast-1").enabled is True
    conn = http.client.HTTPConnection("127.0.0.3", port, timeout=10)
    try:
        assert _timed_get(conn) >= 120.0 - 0.2
    finally:
        conn.close()


def test_mistakes_are_refused_clearly(proxy: LatencyProxy, target: TargetServer) -> None:
    port = target.port
    proxy.add_region("eu-west-2", ("127.0.0.2", port), ("127.0.0.1", port), 5.0)
    with pytest.raises(BadInputError, match="already has a latency proxy"):
        proxy.add_region("eu-west-2", ("127.0.0.5", port), ("127.0.0.1", port), 5.0)
    with pytest.raises(PreflightError, match=rf"cannot listen on 127\.0\.0\.1:{port}") as caught:
        proxy.add_region("us-east-1", ("127.0.0.1", port), ("127.0.0.1", port), 40.0)  # the target holds it
    assert caught.value.fix is not None and "ss -ltnp" in caught.value.fix
    with pytest.raises(BadInputError, match="has no region 'us-east-1'") as missing:
        proxy.set_latency("us-east-1", 40.0)
    assert missing.value.fix is not None and "eu-west-2" in missing.value.fix
    with pytest.raises(BadInputError, match="has no region"):
        proxy.cut("us-east-1")
    with pytest.raises(BadInputError, match="jitter 9 ms exceeds latency 5 ms"):
        proxy.set_latency("eu-west-2", 5.0, jitter_ms=9.0)
    with pytest.raises(BadInputError, match=r"outside 0\.\.10000 ms"):
        proxy.add_region("us-east-2", ("127.0.0.6", port), ("127.0.0.1", port), -1.0)
    # Nothing half-made was left behind by the refusals.
    assert proxy.regions() == {"eu-west-2": 5.0}


def test_stop_leaves_no_process_and_no_listener(
    tmp_path: Path, toxiproxy_binary: str, target: TargetServer
) -> None:
    port = target.port
    with LatencyProxy(tmp_path / "toxiproxy", toxiproxy_binary) as proxy:
        _add_regions(proxy, port)
        pid, api_url = proxy.pid, proxy.api_url
        assert pid is not None and _alive(pid)
        assert (tmp_path / "toxiproxy" / "toxiproxy.pid").read_text().strip() == str(pid)
    assert not _alive(pid)
    assert not (tmp_path / "toxiproxy" / "toxiproxy.pid").exists()
    api_port = int(api_url.rsplit(":", 1)[1])
    for host, number in [("127.0.0.1", api_port), *[(host, port) for host, _ in REGIONS.values()]]:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, number), timeout=5).close()
    assert (tmp_path / "toxiproxy" / "toxiproxy.log").is_file()


def test_toxiproxy_dies_with_the_process_that_started_it(tmp_path: Path, toxiproxy_binary: str) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from loadorch.lab.latency import LatencyProxy\n"
        "proxy = LatencyProxy(Path(sys.argv[1]), sys.argv[2]).start()\n"
        "print(proxy.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "toxiproxy"), toxiproxy_binary],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_gone(child), f"toxiproxy-server {child} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)


def test_a_binary_that_is_not_toxiproxy_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="exited with code 1 during start-up") as caught:
        LatencyProxy(tmp_path / "false", "/bin/false").start()
    assert caught.value.fix is not None and "make toxiproxy" in caught.value.fix
    with pytest.raises(PreflightError, match="not found"):
        LatencyProxy(tmp_path / "missing", str(tmp_path / "no-such-toxiproxy")).start()
