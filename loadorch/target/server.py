"""The sample target: a small HTTP/1.1 "social feed" with a bounded capacity.

Load tests in demos and tests aim here. It behaves like a service with a fixed
pool of workers: at most `capacity` requests are served at once, each holding
its slot for `service_time_ms`. Throughput therefore tops out near
``capacity / service_time`` (about 400 requests/s with the defaults); baseline
load is comfortable, while a tenfold spike first queues (latency rises) and
then, once a request has waited `queue_timeout_ms` for a slot, gets
``503 {"error":"overloaded"}``.

It is standard library only: a hand-written `asyncio.Protocol` HTTP/1.1 parser
(keep-alive, pipelining, partial reads, Content-Length bodies) so that the
target, not its HTTP stack, is what saturates, and so that thousands of new
connections per second (one per Gatling virtual user) are cheap.

Endpoints, all answering JSON (the "limited" ones compete for capacity):

- ``GET /health`` -> 200 ``{"status":"ok"}``; not limited
- ``GET /`` -> 200 a small index of the endpoints; not limited
- ``GET /stats`` -> 200 the counters of `TargetServer.stats`; not limited
- ``GET /feed?page=N`` -> 200 a page of 10 post summaries; limited
- ``GET /posts/{id}`` -> 200 the post, 404 unless 1 <= id <= posts; limited
- ``POST /posts/{id}/like`` -> 200 ``{"id":id,"likes":n}``, 404 for unknown ids; limited
- ``POST /posts`` -> 201 the created post (JSON object body); limited

Anything else is 404, a known path with the wrong method 405 (with `Allow`),
and a malformed request 400 followed by closing the connection. HEAD works
wherever GET does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from types import FrameType
from typing import Any

from loadorch.errors import InfrastructureError, PreflightError
from loadorch.preflight import is_loopback_host

# Limits that keep one misbehaving client from hurting the target or the machine.
MAX_HEAD_BYTES = 16 * 1024  # request line + headers
MAX_BODY_BYTES = 1024 * 1024
MAX_PIPELINED = 32  # queued requests per connection before we stop reading from it
IDLE_TIMEOUT_S = 60.0  # idle keep-alive or half-sent requests are closed after this
SWEEP_INTERVAL_S = 5.0
LISTEN_BACKLOG = 4096  # load generators open connections in bursts; the kernel caps it at somaxconn
PAGE_SIZE = 10
MAX_POSTS = 100_000  # feed pages are cached, so this bounds memory (~15 MB at most)
MAX_DURATION_MS = 60_000.0  # Gatling's own request timeout; anything longer is a typo

_LOOPBACK_V4_NAMES = frozenset({"localhost", "localhost.localdomain"})
_LOOPBACK_V6_NAMES = frozenset({"ip6-localhost"})

_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# status line, date, length, extra headers, Connection header
_RESPONSE_HEAD = (
    b"%sServer: spike-target\r\nDate: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n"
)

# Static path -> {method: route name}. "/posts/{id}" and "/posts/{id}/like" are matched by hand.
_STATIC_ROUTES: dict[bytes, dict[bytes, str]] = {
    b"/": {b"GET": "index"},
    b"/health": {b"GET": "health"},
    b"/stats": {b"GET": "stats"},
    b"/feed": {b"GET": "feed"},
    b"/posts": {b"POST": "create_post"},
}
_POST_ROUTE = {b"GET": "post"}
_LIKE_ROUTE = {b"POST": "like"}
ROUTE_NAMES = ("index", "health", "stats", "feed", "post", "like", "create_post")
# Only the "business" endpoints compete for capacity: health checks and /stats must keep
# answering during an overload, which is exactly when someone looks at them.
_LIMITED = frozenset({"feed", "post", "like", "create_post"})

_TEXTS = (
    "Just shipped a new feature, feedback welcome",
    "Hot take: tests are documentation that cannot lie",
    "Coffee first, then the incident review",
    "Look at this sunset over the data centre",
    "Thread: what I learned from a week of on-call",
    "Our latency graph finally looks boring",
    "Who else is load testing on a Friday?",
    "This cat has better uptime than my laptop",
)

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class TargetConfig:
    """How the sample target listens and how much load it can take."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port; `TargetServer.url` then tells which
    capacity: int = 8  # requests served concurrently (a concurrency limit)
    service_time_ms: float = 20  # time each request holds its slot
    queue_timeout_ms: float = 250  # a request waiting longer than this for a slot gets 503
    extra_latency_ms: float = 0  # deliberate slowdown added to every limited request
    posts: int = 500  # posts with ids 1..posts exist
    access_log: str | None = None  # append each request here in the combined log format (as nginx)


def check_config(config: TargetConfig) -> None:
    """Refuse a configuration the target cannot or must not run with.

    The host must be a loopback address or name; it is judged from its text
    alone, so a name like ``shop.invalid`` is refused without any DNS lookup.
    Raises `PreflightError` saying what is wrong and how to fix it.
    """
    host = config.host
    if not isinstance(host, str) or not host:
        raise PreflightError(
            "the sample target needs a host to listen on", fix="use --host 127.0.0.1 (the default)"
        )
    if not is_loopback_host(host):
        raise PreflightError(
            f"the sample target only listens on loopback, and host {host!r} is not a loopback address",
            fix="use --host 127.0.0.1 (or ::1 or localhost); the sample target serves this machine only",
        )
    _check_int("port", config.port, "--port", low=0, high=65535, hint="0 picks a free port")
    _check_int("capacity", config.capacity, "--capacity", low=1, high=1_000_000)
    _check_int("posts", config.posts, "--posts", low=1, high=MAX_POSTS)
    _check_ms("service_time_ms", config.service_time_ms, "--service-time-ms")
    _check_ms("queue_timeout_ms", config.queue_timeout_ms, "--queue-timeout-ms")
    _check_ms("extra_latency_ms", config.extra_latency_ms, "--extra-latency-ms")


def _check_int(name: str, value: object, option: str, *, low: int, high: int, hint: str = "") -> None:
    # bool is an int subclass; `capacity=True` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        extra = f" ({hint})" if hint else ""
        raise PreflightError(
            f"sample target {name} must be a whole number from {low} to {high}, not {value!r}",
            fix=f"pass {option} with a value in that range{extra}",
        )


def _check_ms(name: str, value: object, option: str) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_DURATION_MS
    )
    if not ok:
        raise PreflightError(
            f"sample target {name} must be a number of milliseconds from 0 to {MAX_DURATION_MS:.0f}, "
            f"not {value!r}",
            fix=f"pass {option} with a value in that range",
        )


def _bind_address(host: str) -> str:
    """The IP literal to bind for a (validated) loopback host; names map without DNS."""
    lowered = host.lower()
    if lowered in _LOOPBACK_V4_NAMES:
        return "127.0.0.1"
    if lowered in _LOOPBACK_V6_NAMES:
        return "::1"
    return host


def _listen(host: str, port: int) -> socket.socket:
    """A listening, non-blocking socket; binding errors become `PreflightError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted target reuse its port while old connections sit in TIME_WAIT;
        # on Linux it still refuses a port another socket is listening on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PreflightError(
                f"port {port} on {host} is busy: another process is listening there",
                fix=f"stop it (`ss -ltnp 'sport = :{port}'` shows which) or choose another port with "
                "--port (0 picks a free one)",
            ) from exc
        if exc.errno == errno.EACCES:
            raise PreflightError(
                f"port {port} on {host} needs privileges to listen on",
                fix="choose a port from 1024 up with --port (0 picks a free one)",
            ) from exc
        raise PreflightError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}",
            fix="check the host is a loopback address this machine has, or use --host 127.0.0.1",
        ) from exc
    return sock


class _Request:
    """One parsed request. `error` set means: answer it with that status, then close."""

    __slots__ = (
        "body",
        "error",
        "expect_continue",
        "head_only",
        "http10",
        "keep_alive",
        "length",
        "method",
        "path",
        "query",
    )

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.query = b""
        self.body = b""
        self.length = 0
        self.keep_alive = False
        self.http10 = False
        self.head_only = False
        self.expect_continue = False
        self.error: tuple[int, str] | None = None

    @classmethod
    def failed(cls, status: int, detail: str) -> _Request:
        req = cls()
        req.error = (status, detail)
        return req


class _HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _parse_head(head: bytes, lf_only: bool) -> _Request:
    """Request line and headers (without the blank line) -> `_Request`, or `_HttpError`."""
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")] if lf_only else head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _HttpError(400, "malformed request line; expected 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if version == b"HTTP/1.1":
        http10 = False
    elif version == b"HTTP/1.0":
        http10 = True
    elif version.startswith(b"HTTP/"):
        raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    else:
        raise _HttpError(400, "malformed request line; expected 'METHOD /path HTTP/1.1'")
    if not method.isalpha() or not method.isupper():
        raise _HttpError(400, "malformed method")
    if not target.startswith(b"/"):
        # Absolute form (proxies send it): keep only the path.
        if target.startswith((b"http://", b"https://")):
            slash = target.find(b"/", target.find(b"//") + 2)
            target = target[slash:] if slash >= 0 else b"/"
        elif target != b"*":
            raise _HttpError(400, "malformed request target; it must start with '/'")

    req = _Request()
    req.method = method
    req.http10 = http10
    req.head_only = method == b"HEAD"
    close = False
    keep_alive_token = False
    seen_length = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # RFC 9112: no whitespace around the field name; obsolete line folding is refused.
        if not colon or not name or name[0] in b" \t" or name[-1] in b" \t":
            raise _HttpError(400, "malformed header line")
        lname = name.lower()
        if lname == b"content-length":
            digits = value.strip()
            if not digits.isdigit() or len(digits) > 12:
                raise _HttpError(400, "invalid Content-Length")
            length = int(digits)
            if seen_length and length != req.length:
                raise _HttpError(400, "conflicting Content-Length headers")
            req.length = length
            seen_length = True
        elif lname == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token == b"close":
                    close = True
                elif token == b"keep-alive":
                    keep_alive_token = True
        elif lname == b"transfer-encoding":
            raise _HttpError(501, "Transfer-Encoding is not supported; send the body with a Content-Length")
        elif lname == b"expect" and value.strip().lower() == b"100-continue":
            req.expect_continue = True
    if req.length > MAX_BODY_BYTES:
        raise _HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    req.keep_alive = not close and (keep_alive_token or not http10)
    question = target.find(b"?")
    if question >= 0:
        req.path, req.query = target[:question], target[question + 1 :]
    else:
        req.path = target
    return req


class _App:
    """State shared by all connections of one server: capacity, data, counters.

    Lives on the server's event loop thread; only `stats` is read from others.
    """

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self.sem = asyncio.Semaphore(config.capacity)
        self.hold_s = (config.service_time_ms + config.extra_latency_ms) / 1000.0
        self.queue_timeout_s = config.queue_timeout_ms / 1000.0
        self.likes = [0] * (config.posts + 1)
        self.page_count = math.ceil(config.posts / PAGE_SIZE)
        self.pages: dict[int, bytes] = {}
        self.conns: set[_HttpProtocol] = set()
        self.started = time.monotonic()
        self._date_second = -1
        self._log_second = -1
        self._log_stamp = b""
        self.access_log = open(config.access_log, "ab", buffering=1 << 16) if config.access_log else None  # noqa: SIM115

        self._date = b""
        # Counters. Every dict is filled with all its keys up front, so `stats()` can copy
        # them from another thread without "dictionary changed size during iteration".
        self.requests = 0
        self.served = dict.fromkeys(ROUTE_NAMES, 0)
        self.responses = dict.fromkeys(_REASONS, 0)
        self.in_flight = 0
        self.max_in_flight = 0
        self.waiting = 0
        self.max_waiting = 0
        self.connections_accepted = 0
        self.likes_total = 0
        self.posts_created = 0
        self.next_post_id = config.posts + 1
        self.handlers: dict[str, Callable[[_Request, int], tuple[int, bytes, bytes]]] = {
            "index": self._index,
            "health": self._health,
            "stats": self._stats,
            "feed": self._feed,
            "post": self._post,
            "like": self._like,
            "create_post": self._create_post,
        }
        self.index_body = _json(
            {
                "service": "spike sample target",
                "endpoints": [
                    "GET /health",
                    "GET /feed?page=N",
                    "GET /posts/{id}",
                    "POST /posts/{id}/like",
                    "POST /posts",
                    "GET /stats",
                ],
                "posts": config.posts,
                "capacity": config.capacity,
            }
        )

    # ---- counters -------------------------------------------------------------------

    def log_access(self, req: _Request, status: int, size: int) -> None:
        """One combined-format line (`spike replay import` reads these, as it reads nginx's)."""
        assert self.access_log is not None
        now = int(time.time())
        if now != self._log_second:
            self._log_second = now
            self._log_stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(now)).encode()
        target = req.path + (b"?" + req.query if req.query else b"")
        self.access_log.write(
            b'127.0.0.1 - - %s "%s %s HTTP/1.1" %d %d "-" "-"\n'
            % (self._log_stamp, req.method or b"-", target or b"-", status, size)
        )

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = None

    def stats(self) -> dict[str, Any]:
        responses = self.responses.copy()
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": self.requests,
            "served": self.served.copy(),
            "responses": {str(code): n for code, n in responses.items()},
            "rejected_503": responses[503],
            "not_found": responses[404],
            "method_not_allowed": responses[405],
            "bad_request": responses[400],
            "server_errors": responses[500],
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "waiting": self.waiting,
            "max_waiting": self.max_waiting,
            "connections_accepted": self.connections_accepted,
            "connections_open": len(self.conns),
            "likes_total": self.likes_total,
            "posts_created": self.posts_created,
            "config": {
                "capacity": self.config.capacity,
                "service_time_ms": self.config.service_time_ms,
                "queue_timeout_ms": self.config.queue_timeout_ms,
                "extra_latency_ms": self.config.extra_latency_ms,
                "posts": self.config.posts,
            },
        }

    def http_date(self) -> bytes:
        # Formatting a date per response is measurable at thousands of requests/s; once a second is enough.
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    # ---- dispatch -------------------------------------------------------------------

    def handle(self, conn: _HttpProtocol, req: _Request) -> Coroutine[Any, Any, None] | None:
        """Answer `req` now, or return the coroutine that will (it must wait for capacity)."""
        self.requests += 1
        if req.error is not None:
            status, detail = req.error
            conn.respond(
                req, status, _json({"error": _REASONS[status].lower(), "detail": detail}), close=True
            )
            return None
        path = req.path
        post_id = 0
        methods = _STATIC_ROUTES.get(path)
        if methods is None and path.startswith(b"/posts/"):
            rest = path[7:]
            if rest.endswith(b"/like"):
                rest, methods = rest[:-5], _LIKE_ROUTE
            else:
                methods = _POST_ROUTE
            # Only plain digits are post ids; "/posts/abc" or "/posts/1/x" are unknown paths.
            if rest.isdigit() and len(rest) <= 12:
                post_id = int(rest)
            else:
                methods = None
        if methods is None:
            conn.respond(req, 404, _NOT_FOUND)
            return None
        name = methods.get(b"GET" if req.head_only else req.method)
        if name is None:
            allow = ", ".join(m.decode() for m in methods)
            if b"GET" in methods:
                allow += ", HEAD"
            conn.respond(req, 405, _METHOD_NOT_ALLOWED, b"Allow: %s\r\n" % allow.encode())
            return None
        if name in _LIMITED:
            if self.hold_s > 0:
                return self._limited(conn, req, name, post_id)
            # No hold time: the slot is taken and given back within this call, so only the
            # in-flight high-water mark needs recording.
            if self.in_flight + 1 > self.max_in_flight:
                self.max_in_flight = self.in_flight + 1
        self._answer(conn, req, name, post_id)
        return None

    async def _limited(self, conn: _HttpProtocol, req: _Request, name: str, post_id: int) -> None:
        sem = self.sem
        if sem.locked():
            if self.queue_timeout_s <= 0:
                conn.respond(req, 503, _OVERLOADED, b"Retry-After: 1\r\n")
                return
            self.waiting += 1
            if self.waiting > self.max_waiting:
                self.max_waiting = self.waiting
            try:
                async with asyncio.timeout(self.queue_timeout_s):
                    await sem.acquire()
            except TimeoutError:
                conn.respond(req, 503, _OVERLOADED, b"Retry-After: 1\r\n")
                return
            finally:
                self.waiting -= 1
        else:
            await sem.acquire()  # a slot is free: returns without suspending
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            self.in_flight -= 1
            sem.release()
        self._answer(conn, req, name, post_id)

    def _answer(self, conn: _HttpProtocol, req: _Request, name: str, post_id: int) -> None:
        try:
            status, body, headers = self.handlers[name](req, post_id)
        except Exception as exc:  # a bug here must cost one request, not the connection or the server
            status, body, headers = 500, _json({"error": "internal error", "detail": repr(exc)}), b""
        if status < 400:
            self.served[name] += 1
        conn.respond(req, status, body, headers)

    # ---- endpoints ------------------------------------------------------------------

    def _index(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        return 200, self.index_body, b""

    def _health(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        return 200, _HEALTH, b""

    def _stats(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        return 200, _json(self.stats()), b""

    def _feed(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        page = 1
        if req.query:
            for part in req.query.split(b"&"):
                key, _, value = part.partition(b"=")
                if key == b"page":
                    if not value.isdigit() or len(value) > 9 or int(value) < 1:
                        return 400, _BAD_PAGE, b""
                    page = int(value)
        body = self.pages.get(page)
        if body is None:
            body = self._render_page(page)
            # Only real pages are cached, so arbitrary page numbers cannot grow memory.
            if page <= self.page_count:
                self.pages[page] = body
        return 200, body, b""

    def _render_page(self, page: int) -> bytes:
        first = (page - 1) * PAGE_SIZE + 1
        last = min(first + PAGE_SIZE - 1, self.config.posts)
        posts = [
            {
                "id": i,
                "author": _author(i),
                "title": f"Post #{i}",
                "excerpt": _TEXTS[i % len(_TEXTS)],
                "url": f"/posts/{i}",
            }
            for i in range(first, last + 1)
        ]
        return _json(
            {
                "page": page,
                "per_page": PAGE_SIZE,
                "pages": self.page_count,
                "total_posts": self.config.posts,
                "posts": posts,
                "next": f"/feed?page={page + 1}" if page < self.page_count else None,
            }
        )

    def _post(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        if not 1 <= post_id <= self.config.posts:
            return 404, _NO_SUCH_POST, b""
        # Built by hand: every part is ASCII we generate, so no JSON escaping is needed.
        body = b'{"id":%d,"author":"%s","title":"Post #%d","text":"%s","likes":%d}' % (
            post_id,
            _author(post_id).encode(),
            post_id,
            _TEXTS[post_id % len(_TEXTS)].encode(),
            self.likes[post_id],
        )
        return 200, body, b""

    def _like(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        if not 1 <= post_id <= self.config.posts:
            return 404, _NO_SUCH_POST, b""
        self.likes[post_id] += 1
        self.likes_total += 1
        return 200, b'{"id":%d,"likes":%d}' % (post_id, self.likes[post_id]), b""

    def _create_post(self, req: _Request, post_id: int) -> tuple[int, bytes, bytes]:
        try:
            data = json.loads(req.body) if req.body else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            return 400, _BAD_POST, b""
        author = data.get("author", "anonymous")
        text = data.get("text", "")
        if not isinstance(author, str) or not isinstance(text, str):
            return 400, _BAD_POST, b""
        new_id = self.next_post_id
        self.next_post_id += 1
        self.posts_created += 1
        # Created posts are echoed, not stored: memory stays flat however long a spike runs.
        body = _json({"id": new_id, "author": author[:100], "text": text[:1000], "likes": 0})
        return 201, body, b"Location: /posts/%d\r\n" % new_id

    # ---- housekeeping ---------------------------------------------------------------

    async def sweep_idle(self) -> None:
        """Close connections idle (or stuck mid-request) for longer than IDLE_TIMEOUT_S."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            deadline = time.monotonic() - IDLE_TIMEOUT_S
            for conn in list(self.conns):
                if conn.task is None and conn.last_active < deadline:
                    conn.close()


def _author(post_id: int) -> str:
    # Matches the bundled posts.csv feeder (post_id,author) so logs line up.
    return f"user{post_id * 7 % 97}"


def _json(value: Any) -> bytes:
    return _JSON.encode(value).encode()


_HEALTH = b'{"status":"ok"}'
_NOT_FOUND = b'{"error":"not found"}'
_NO_SUCH_POST = b'{"error":"no such post"}'
_METHOD_NOT_ALLOWED = b'{"error":"method not allowed"}'
_OVERLOADED = b'{"error":"overloaded"}'
_BAD_PAGE = b'{"error":"bad request","detail":"page must be a whole number from 1"}'
_BAD_POST = (
    b'{"error":"bad request","detail":"the body must be a JSON object like '
    b'{\\"author\\": \\"user7\\", \\"text\\": \\"hello\\"}"}'
)


class _HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests and writes answers strictly in order.

    Requests that can be answered at once are; one that must wait for capacity
    runs as a task, and requests pipelined behind it queue in `pending` so
    responses never overtake each other.
    """

    def __init__(self, app: _App) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: _Request | None = None  # parsed head still waiting for its body
        self.continue_sent = False
        self.pending: deque[_Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.broken = False  # a malformed request was seen: ignore everything after it
        self.eof = False
        self.pipeline_paused = False
        self.write_paused = False
        self.last_active = time.monotonic()

    # ---- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.app.conns.add(self)
        self.app.connections_accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.conns.discard(self)
        self.pending.clear()
        if self.task is not None:
            # The client is gone: stop waiting for (or holding) a slot on its behalf.
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.broken:
            return
        self.last_active = time.monotonic()
        self.buf += data
        self._parse()

    def eof_received(self) -> bool:
        self.eof = True
        # True keeps the write side open until queued answers are out; False lets the transport close.
        return self.task is not None or bool(self.pending)

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests too.
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.pipeline_paused:
            self.transport.resume_reading()
        if not self.closed:
            self._parse()

    # ---- parsing --------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self.buf
        while buf and not (self.closed or self.broken or self.pipeline_paused or self.write_paused):
            if self.head is None:
                # RFC 9112 2.2: ignore empty lines before a request line.
                while buf[:2] == b"\r\n":
                    del buf[:2]
                end = buf.find(b"\r\n\r\n")
                skip = 4
                if end < 0:
                    end = buf.find(b"\n\n")  # tolerate clients that end lines with a bare LF
                    skip = 2
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._fail(400, f"request head larger than {MAX_HEAD_BYTES} bytes")
                    return
                if end > MAX_HEAD_BYTES:
                    self._fail(400, f"request head larger than {MAX_HEAD_BYTES} bytes")
                    return
                head = bytes(buf[:end])
                del buf[: end + skip]
                try:
                    self.head = _parse_head(head, lf_only=skip == 2)
                except _HttpError as exc:
                    self._fail(exc.status, exc.detail)
                    return
                self.continue_sent = False
            req = self.head
            if len(buf) < req.length:
                if req.expect_continue and not self.continue_sent and self.task is None:
                    # curl and others wait for this before sending a body.
                    self.continue_sent = True
                    self._write(_CONTINUE)
                return
            if req.length:
                req.body = bytes(buf[: req.length])
                del buf[: req.length]
            self.head = None
            self._dispatch(req)

    def _fail(self, status: int, detail: str) -> None:
        self.broken = True
        self.buf.clear()
        self._dispatch(_Request.failed(status, detail))

    def _dispatch(self, req: _Request) -> None:
        if self.task is not None:
            self.pending.append(req)
            if len(self.pending) >= MAX_PIPELINED and not self.pipeline_paused:
                self.pipeline_paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
            return
        coro = self.app.handle(self, req)
        if coro is not None:
            self.task = asyncio.get_running_loop().create_task(self._run(coro))

    async def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
            while self.pending and not self.closed:
                nxt = self.app.handle(self, self.pending.popleft())
                if nxt is not None:
                    await nxt
        except Exception:
            # Handlers answer their own errors, so this is a bug; drop just this connection.
            self.close()
        finally:
            self.task = None
        if self.closed:
            return
        if self.pipeline_paused:
            self.pipeline_paused = False
            if self.transport is not None and not self.write_paused:
                self.transport.resume_reading()
        self._parse()  # requests may be buffered behind the ones just answered
        if self.eof and self.task is None and not self.closed:
            self.close()

    # ---- writing --------------------------------------------------------------------

    def respond(
        self, req: _Request, status: int, body: bytes, headers: bytes = b"", close: bool = False
    ) -> None:
        """Write one complete response; close afterwards if the request (or `close`) says so."""
        self.app.responses[status] += 1
        if self.app.access_log is not None:
            self.app.log_access(req, status, len(body))
        keep_alive = req.keep_alive and not close
        if not keep_alive:
            connection = b"Connection: close\r\n"
        elif req.http10:
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        head = _RESPONSE_HEAD % (
            _STATUS_LINES[status],
            self.app.http_date(),
            len(body),
            headers,
            connection,
        )
        self._write(head if req.head_only else head + body)
        if not keep_alive:
            self.close()

    def _write(self, data: bytes) -> None:
        # Writing to a closing transport makes asyncio log warnings; the client is gone anyway.
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close after flushing what is already written."""
        self.closed = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()


class TargetServer:
    """The sample target running on its own event loop in a background thread.

    Use as a context manager in tests, or `start()`/`stop()` from the orchestrator::

        with TargetServer(TargetConfig(port=0)) as target:
            requests_go_to(target.url)
    """

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        self._host = _bind_address(config.host)
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._app: _App | None = None

    def start(self) -> TargetServer:
        """Check the config, bind the port and serve; ready to answer when this returns.

        Raises `PreflightError` for a bad config or a busy port.
        """
        if self._thread is not None:
            raise RuntimeError("this TargetServer was already started; create a new one")
        check_config(self.config)
        # Bind here, in the caller's thread, so a busy port raises right where start() was called.
        sock = _listen(self._host, self.config.port)
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve,
            args=(loop, sock, ready, failure),
            name=f"spike-target:{self._port}",
            daemon=True,  # a forgotten stop() must not keep the interpreter alive
        )
        self._loop, self._thread = loop, thread
        thread.start()
        if not ready.wait(timeout=10) or failure:
            self.stop()
            cause = failure[0] if failure else None
            raise InfrastructureError(f"the sample target did not start on {self.url}: {cause!r}") from cause
        return self

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            app = _App(self.config)
            server = loop.run_until_complete(
                loop.create_server(lambda: _HttpProtocol(app), sock=sock, backlog=LISTEN_BACKLOG)
            )
            sweeper = loop.create_task(app.sweep_idle())
        except BaseException as exc:
            failure.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        self._app = app
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(_shutdown(server, app, sweeper))
            loop.close()

    def stop(self) -> None:
        """Stop serving, drop open connections and join the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = None

    @property
    def running(self) -> bool:
        """True while the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive() and self._loop is not None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._port is None:
            raise RuntimeError("the target is not started; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``, with the real port."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (also served at GET /stats).

        Keys: requests, served (per endpoint name), responses (per status),
        rejected_503, not_found, method_not_allowed, bad_request, server_errors,
        in_flight, max_in_flight, waiting, max_waiting, connections_accepted,
        connections_open, likes_total, posts_created, uptime_s, config.
        Still readable after `stop()`.
        """
        if self._app is None:
            raise RuntimeError("the target is not started; call start() first")
        return self._app.stats()

    def __enter__(self) -> TargetServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _shutdown(server: asyncio.AbstractServer, app: _App, sweeper: asyncio.Task[None]) -> None:
    server.close()
    for conn in list(app.conns):
        if conn.transport is not None:
            conn.transport.abort()  # we are stopping: do not wait for slow readers
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()
    app.close()


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt) while serving."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_forever(config: TargetConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop and return normally (for `spike target serve`).

    `on_ready` is called with the URL once the port is bound and answering.
    Raises `PreflightError` for a bad config or busy port, and
    `InfrastructureError` if the server stops on its own.
    """
    server = TargetServer(config)
    with _sigterm_interrupts():
        try:
            server.start()
            if on_ready is not None:
                on_ready(server.url)
            while server.running:
                time.sleep(0.5)  # interrupted at once by a signal
            raise InfrastructureError(f"the sample target on {server.url} stopped unexpectedly")
        except KeyboardInterrupt:
            return
        finally:
            server.stop()
