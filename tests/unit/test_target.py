"""The sample target over real sockets on 127.0.0.1 (always port 0)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loadorch.errors import PreflightError
from loadorch.target.server import TargetConfig, TargetServer, check_config

REPO = Path(__file__).resolve().parents[2]


class Raw:
    """A bare socket client: exact bytes out, responses parsed by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, has_body: bool = True) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed before a complete response; got {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"]) if has_body else 0
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed mid-body"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def target() -> Iterator[TargetServer]:
    # A short but non-zero service time, so limited endpoints take the asynchronous path.
    with TargetServer(TargetConfig(port=0, service_time_ms=2, posts=25)) as server:
        yield server


# ---- endpoints ---------------------------------------------------------------------------


def test_url_has_the_real_port(target: TargetServer) -> None:
    assert target.port > 0
    assert target.url == f"http://127.0.0.1:{target.port}"


def test_health(target: TargetServer) -> None:
    status, headers, body = request(target.port, "GET", "/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"status": "ok"}


def test_index(target: TargetServer) -> None:
    status, _, body = request(target.port, "GET", "/")
    assert status == 200
    index = json.loads(body)
    assert "GET /feed?page=N" in index["endpoints"]
    assert index["posts"] == 25


def test_feed_pages(target: TargetServer) -> None:
    status, _, body = request(target.port, "GET", "/feed?page=2")
    assert status == 200
    page = json.loads(body)
    assert [p["id"] for p in page["posts"]] == list(range(11, 21))
    assert page["next"] == "/feed?page=3"
    last = json.loads(request(target.port, "GET", "/feed?page=3")[2])
    assert [p["id"] for p in last["posts"]] == list(range(21, 26))
    assert last["next"] is None
    assert json.loads(request(target.port, "GET", "/feed?page=99")[2])["posts"] == []
    first = json.loads(request(target.port, "GET", "/feed")[2])
    assert first["page"] == 1 and first["posts"][0]["id"] == 1


@pytest.mark.parametrize("query", ["page=0", "page=x", "page=-1"])
def test_feed_bad_page_is_400(target: TargetServer, query: str) -> None:
    status, _, body = request(target.port, "GET", f"/feed?{query}")
    assert status == 400
    assert "page" in json.loads(body)["detail"]


def test_post(target: TargetServer) -> None:
    status, _, body = request(target.port, "GET", "/posts/7")
    assert status == 200
    post = json.loads(body)
    assert post["id"] == 7 and post["author"] == "user49" and "likes" in post


@pytest.mark.parametrize("path", ["/posts/0", "/posts/26", "/posts/abc", "/posts/1/comments", "/posts/"])
def test_unknown_post_is_404(target: TargetServer, path: str) -> None:
    assert request(target.port, "GET", path)[0] == 404


def test_like_counts_up(target: TargetServer) -> None:
    before = target.stats()["likes_total"]
    first = json.loads(request(target.port, "POST", "/posts/3/like")[2])
    status, _, body = request(target.port, "POST", "/posts/3/like")
    assert status == 200
    assert json.loads(body)["likes"] == first["likes"] + 1
    assert json.loads(request(target.port, "GET", "/posts/3")[2])["likes"] == first["likes"] + 1
    assert target.stats()["likes_total"] == before + 2
    assert request(target.port, "POST", "/posts/999/like")[0] == 404


def test_create_post(target: TargetServer) -> None:
    payload = json.dumps({"author": "user7", "text": "spike test"}).encode()
    status, headers, body = request(
        target.port, "POST", "/posts", body=payload, headers={"Content-Type": "application/json"}
    )
    assert status == 201
    created = json.loads(body)
    assert created["author"] == "user7" and created["text"] == "spike test" and created["id"] > 25
    assert headers["location"] == f"/posts/{created['id']}"


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"", b'{"text": 5}'])
def test_create_post_needs_a_json_object(target: TargetServer, payload: bytes) -> None:
    status, _, body = request(target.port, "POST", "/posts", body=payload)
    assert status == 400
    assert "JSON object" in json.loads(body)["detail"]


def test_stats_endpoint_counts(target: TargetServer) -> None:
    before = json.loads(request(target.port, "GET", "/stats")[2])
    request(target.port, "GET", "/health")
    request(target.port, "GET", "/nowhere")
    after = json.loads(request(target.port, "GET", "/stats")[2])
    assert after["served"]["health"] == before["served"]["health"] + 1
    assert after["served"]["stats"] == before["served"]["stats"] + 1
    assert after["not_found"] == before["not_found"] + 1
    assert after["config"]["capacity"] == 8


def test_head_has_length_but_no_body(target: TargetServer) -> None:
    raw = Raw(target.port)
    raw.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = raw.response(has_body=False)
    assert status == 200 and headers["content-length"] == "15" and body == b""
    assert raw.response()[2] == b'{"status":"ok"}'  # the next response starts right after the head
    raw.close()


# ---- connections and framing -------------------------------------------------------------


def test_keep_alive_serves_two_requests_on_one_connection(target: TargetServer) -> None:
    accepted = target.stats()["connections_accepted"]
    raw = Raw(target.port)
    raw.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = raw.response()
    raw.send(b"GET /posts/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    second = raw.response()
    raw.close()
    assert first[0] == 200 and "connection" not in first[1]
    assert second[0] == 200 and json.loads(second[2])["id"] == 1
    assert target.stats()["connections_accepted"] == accepted + 1


def test_connection_close_is_honoured(target: TargetServer) -> None:
    raw = Raw(target.port)
    raw.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = raw.response()
    assert status == 200 and headers["connection"] == "close"
    assert raw.closed_by_server()
    raw.close()


def test_http10_closes_unless_keep_alive(target: TargetServer) -> None:
    raw = Raw(target.port)
    raw.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert raw.response()[1]["connection"] == "keep-alive"
    raw.send(b"GET /health HTTP/1.0\r\n\r\n")
    assert raw.response()[1]["connection"] == "close"
    assert raw.closed_by_server()
    raw.close()


def test_pipelined_responses_keep_request_order(target: TargetServer) -> None:
    # /posts/2 waits for capacity (asynchronous), /health is answered at once: order must hold.
    raw = Raw(target.port)
    raw.send(
        b"GET /posts/2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /posts/2/like HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = [raw.response() for _ in range(4)]
    raw.close()
    assert [a[0] for a in answers] == [200, 200, 200, 404]
    assert json.loads(answers[0][2])["id"] == 2
    assert json.loads(answers[1][2]) == {"status": "ok"}
    assert "likes" in json.loads(answers[2][2])


def test_request_split_across_many_packets(target: TargetServer) -> None:
    body = b'{"author": "slow", "text": "typed one byte at a time"}'
    data = b"POST /posts HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    raw = Raw(target.port)
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), 7):
        raw.send(data[i : i + 7])
        time.sleep(0.001)
    status, _, answer = raw.response()
    raw.close()
    assert status == 201 and json.loads(answer)["author"] == "slow"


def test_unknown_path_is_404(target: TargetServer) -> None:
    status, _, body = request(target.port, "GET", "/admin")
    assert status == 404 and json.loads(body) == {"error": "not found"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("DELETE", "/posts/1", "GET, HEAD"), ("GET", "/posts/1/like", "POST"), ("POST", "/health", "GET, HEAD")],
)
def test_wrong_method_is_405(target: TargetServer, method: str, path: str, allow: str) -> None:
    status, headers, _ = request(target.port, method, path)
    assert status == 405
    assert headers["allow"] == allow


@pytest.mark.parametrize(
    "data",
    [
        b"NONSENSE\r\n\r\n",
        b"GET /health\r\n\r\n",
        b"GET health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /posts HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
    ],
)
def test_malformed_request_is_400_then_closed(target: TargetServer, data: bytes) -> None:
    raw = Raw(target.port)
    raw.send(data)
    status, headers, body = raw.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body)["error"] == "bad request"
    assert raw.closed_by_server()
    raw.close()


# ---- configuration and preflight ---------------------------------------------------------


@pytest.mark.parametrize("host", ["shop.invalid", "10.0.0.1"])
def test_non_loopback_host_is_refused_without_any_lookup(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("no DNS lookup or connection may happen for a refused host")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "gethostbyname", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    with pytest.raises(PreflightError) as err:
        TargetServer(TargetConfig(host=host, port=0)).start()
    message = str(err.value)
    assert repr(host) in message
    assert "not a loopback address" in message
    assert "--host 127.0.0.1" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    check_config(TargetConfig(host=host))


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("capacity", 0, "--capacity"),
        ("port", 70000, "--port"),
        ("posts", 0, "--posts"),
        ("service_time_ms", -1, "--service-time-ms"),
        ("queue_timeout_ms", float("nan"), "--queue-timeout-ms"),
        ("extra_latency_ms", 10**9, "--extra-latency-ms"),
    ],
)
def test_bad_numbers_are_refused(field: str, value: object, option: str) -> None:
    with pytest.raises(PreflightError) as err:
        check_config(TargetConfig(**{field: value}))  # type: ignore[arg-type]
    assert field in err.value.message
    assert err.value.fix is not None and option in err.value.fix


def test_busy_port_is_a_preflight_error_naming_the_port() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        with pytest.raises(PreflightError) as err:
            TargetServer(TargetConfig(port=port)).start()
    text = str(err.value)
    assert f"port {port}" in text and "busy" in text
    assert "--port" in text


def test_port_can_be_reused_right_after_stop() -> None:
    with TargetServer(TargetConfig(port=0)) as first:
        port = first.port
        assert request(port, "GET", "/health")[0] == 200
    with TargetServer(TargetConfig(port=port)) as second:
        assert request(second.port, "GET", "/health")[0] == 200


# ---- capacity model ----------------------------------------------------------------------


def test_overload_gives_503_and_is_counted() -> None:
    config = TargetConfig(port=0, capacity=1, service_time_ms=200, queue_timeout_ms=50)
    with TargetServer(config) as server:

        def read(_: int) -> tuple[int, dict[str, str], bytes]:
            return request(server.port, "GET", "/feed?page=1")

        with ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(read, i) for i in range(10)]
            time.sleep(0.02)
            # The one slot is held for 200 ms and requests queue, yet health checks still answer
            # (a limited request here would get 503 after 50 ms).
            assert request(server.port, "GET", "/health")[0] == 200
            results = [f.result() for f in futures]
        stats = server.stats()
    statuses = [r[0] for r in results]
    rejected = [r for r in results if r[0] == 503]
    assert statuses.count(200) >= 1
    assert len(rejected) >= 5
    assert set(statuses) <= {200, 503}
    assert all(r[1]["retry-after"] == "1" and json.loads(r[2]) == {"error": "overloaded"} for r in rejected)
    assert stats["rejected_503"] == len(rejected)
    assert stats["served"]["feed"] == statuses.count(200)
    assert stats["max_in_flight"] == 1
    assert stats["max_waiting"] >= 1


def test_extra_latency_slows_every_limited_request() -> None:
    with TargetServer(TargetConfig(port=0, service_time_ms=0, extra_latency_ms=150)) as server:
        started = time.monotonic()
        status = request(server.port, "GET", "/posts/1")[0]
        elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed >= 0.15


# ---- serve_forever ---------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_stops_cleanly_on_signal(signum: int) -> None:
    code = (
        "import sys\n"
        "from loadorch.target.server import TargetConfig, serve_forever\n"
        "serve_forever(TargetConfig(port=0), on_ready=lambda url: print(url, flush=True))\n"
        "print('returned', flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert request(port, "GET", "/health")[0] == 200
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "returned" in out
