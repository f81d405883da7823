"""InfluxDB settings, API detection and error translation, against a tiny fake server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from loadorch.errors import BadInputError
from loadorch.metrics.influx import (
    PASSWORD_ENV,
    TOKEN_ENV,
    InfluxSettings,
    V1Sink,
    V2Sink,
    api_for_version,
    detect_api,
    make_sink,
)
from loadorch.metrics.sink import SinkRejected, SinkUnavailable
from loadorch.metrics.stack import free_port

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-s3cret-42"


# ---------------------------------------------------------------- fake server


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_port: int  # one per TCP connection: shows keep-alive


class FakeServer:
    """Answers (method, path) with canned replies and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Reply] = {}
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                outer.seen.append(
                    Seen(
                        self.command,
                        parts.path,
                        parse_qs(parts.query),
                        dict(self.headers),
                        body,
                        self.client_address[1],
                    )
                )
                reply = outer.routes.get((self.command, parts.path), Reply(404, body=b"404 page not found"))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def route(self, method: str, path: str, reply: Reply) -> None:
        self.routes[(method, path)] = reply

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def influx1(version: str = "1.6.7~rc0") -> dict[str, str]:
    return {"X-Influxdb-Version": version, "Content-Type": "application/json"}


def error_reply(status: int, message: str, version: str = "1.6.7~rc0") -> Reply:
    return Reply(
        status,
        {**influx1(version), "X-Influxdb-Error": message},
        json.dumps({"error": message}).encode(),
    )


# ---------------------------------------------------------------- settings


def test_token_and_password_come_from_the_environment() -> None:
    settings = InfluxSettings.from_env(
        "http://127.0.0.1:8086/",
        username="admin",
        environ={TOKEN_ENV: TOKEN, PASSWORD_ENV: PASSWORD},
    )
    assert settings.url == "http://127.0.0.1:8086"
    assert settings.token == TOKEN and settings.token_source == f"${TOKEN_ENV}"
    assert settings.password == PASSWORD and settings.password_source == f"${PASSWORD_ENV}"


def test_secret_files_win_over_the_environment_and_lose_only_the_line_ending(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    password_file = tmp_path / "password"
    password_file.write_text(f"{PASSWORD} \r\n")  # a trailing space is part of the password
    settings = InfluxSettings.from_env(
        "http://127.0.0.1:8086",
        username="admin",
        token_file=token_file,
        password_file=password_file,
        environ={TOKEN_ENV: "from-env", PASSWORD_ENV: "from-env"},
    )
    assert settings.token == TOKEN
    assert settings.token_source == f"token_file {token_file}"
    assert settings.password == f"{PASSWORD} "
    assert settings.password_source == f"password_file {password_file}"


def test_no_secrets_anywhere_gives_none() -> None:
    settings = InfluxSettings.from_env("http://127.0.0.1:8086", environ={})
    assert settings.token is None and settings.password is None and settings.username is None


def test_unreadable_or_empty_secret_files_are_bad_input_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(BadInputError) as info:
        InfluxSettings.from_env("http://127.0.0.1:8086", token_file=missing, environ={})
    assert str(missing) in info.value.render() and "token_file" in info.value.render()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(BadInputError, match="is empty"):
        InfluxSettings.from_env("http://127.0.0.1:8086", username="u", password_file=empty, environ={})


def test_username_needs_a_password_and_says_where_to_put_it() -> None:
    with pytest.raises(BadInputError) as info:
        InfluxSettings.from_env("http://127.0.0.1:8086", username="admin", environ={})
    assert PASSWORD_ENV in info.value.render()


def test_a_password_without_username_from_a_file_is_an_error_but_an_ambient_one_is_ignored(
    tmp_path: Path,
) -> None:
    settings = InfluxSettings.from_env("http://127.0.0.1:8086", environ={PASSWORD_ENV: PASSWORD})
    assert settings.password is None
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD)
    with pytest.raises(BadInputError, match="no username"):
        InfluxSettings.from_env("http://127.0.0.1:8086", password_file=password_file, environ={})


def test_repr_and_str_never_show_secrets_but_say_where_they_came_from() -> None:
    settings = InfluxSettings.from_env(
        "http://127.0.0.1:8086", username="admin", environ={TOKEN_ENV: TOKEN, PASSWORD_ENV: PASSWORD}
    )
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert TOKEN not in text and PASSWORD not in text
        assert f"${TOKEN_ENV}" in text and f"${PASSWORD_ENV}" in text
        assert "admin" in text and "http://127.0.0.1:8086" in text


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("127.0.0.1:8086", "not an http(s) URL"),
        ("ftp://127.0.0.1", "not an http(s) URL"),
        ("http://admin:pw-in-url@127.0.0.1:8086", "must not contain credentials"),
        ("admin:pw-in-url@127.0.0.1:8086", "must not contain credentials"),
    ],
)
def test_bad_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(BadInputError) as info:
        InfluxSettings(url=url)
    assert fragment in info.value.render()
    assert "pw-in-url" not in info.value.render()


def test_unknown_api_is_refused() -> None:
    with pytest.raises(BadInputError, match="auto, v1, v2"):
        InfluxSettings(url="http://127.0.0.1:8086", api="v3")  # type: ignore[arg-type]


# ---------------------------------------------------------------- API detection


@pytest.mark.parametrize(
    ("version", "api"),
    [
        ("1.6.7~rc0", "v1"),
        ("1.7.11", "v1"),
        ("1.8.0", "v2"),
        ("1.8.10", "v2"),
        ("1.11.8", "v2"),
        ("v2.7.4", "v2"),
        ("2.0.0-beta.16", "v2"),
        ("3.0.1", "v2"),
        ("unknown", None),
        ("", None),
    ],
)
def test_api_for_version(version: str, api: str | None) -> None:
    assert api_for_version(version) == api


@pytest.mark.parametrize(("header", "api"), [("1.6.7~rc0", "v1"), ("1.8.10", "v2"), ("v2.7.4", "v2")])
def test_detect_api_reads_the_ping_header(fake: FakeServer, header: str, api: str) -> None:
    fake.route("GET", "/ping", Reply(204, influx1(header)))
    assert detect_api(fake.url) == (api, header)
    assert not fake.requests_to("/api/v2/write"), "a versioned server needs no probe"


def test_detect_api_probes_v2_write_when_ping_has_no_version(fake: FakeServer) -> None:
    # What VictoriaMetrics 1.79 does: /ping without a version, /api/v2/write answering 204.
    fake.route("GET", "/ping", Reply(204))
    fake.route("POST", "/api/v2/write", Reply(204, {"X-Influxdb-Version": "1.8.0"}))
    api, version = detect_api(fake.url)
    assert api == "v2"
    assert "1.8.0" in version
    (probe,) = fake.requests_to("/api/v2/write")
    assert probe.body == b""


def test_detect_api_falls_back_to_v1_when_v2_write_is_missing(fake: FakeServer) -> None:
    fake.route("GET", "/ping", Reply(204))
    assert detect_api(fake.url) == ("v1", "unknown")


def test_detect_api_refuses_something_that_is_not_influxdb(fake: FakeServer) -> None:
    with pytest.raises(SinkRejected, match="does not look like InfluxDB") as info:
        detect_api(fake.url)
    assert fake.url in info.value.message


def test_detect_api_on_a_closed_port_is_unavailable_and_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SinkUnavailable) as info:
        detect_api(url, timeout_s=2)
    assert url in info.value.message
    assert "Connection refused" in info.value.message


def test_make_sink_uses_detection_only_for_auto(fake: FakeServer) -> None:
    fake.route("GET", "/ping", Reply(204, influx1("1.6.7~rc0")))
    sink = make_sink(InfluxSettings(url=fake.url))
    assert isinstance(sink, V1Sink)
    sink.close()
    fake.route("GET", "/ping", Reply(204, influx1("v2.7.4")))
    sink = make_sink(InfluxSettings(url=fake.url))
    assert isinstance(sink, V2Sink)
    sink.close()
    asked = len(fake.requests_to("/ping"))
    # An explicit api never asks the server.
    closed = f"http://127.0.0.1:{free_port()}"
    for api, kind in (("v1", V1Sink), ("v2", V2Sink)):
        sink = make_sink(InfluxSettings(url=closed, api=api))  # type: ignore[arg-type]
        assert isinstance(sink, kind)
        sink.close()
    assert len(fake.requests_to("/ping")) == asked


# ---------------------------------------------------------------- V1Sink


def test_v1_write_posts_the_batch_with_db_rp_ms_precision_and_basic_auth(fake: FakeServer) -> None:
    fake.route("POST", "/write", Reply(204, influx1()))
    settings = InfluxSettings.from_env(
        fake.url,
        database="metrics",
        retention_policy="week",
        username="admin",
        environ={PASSWORD_ENV: PASSWORD},
    )
    sink = V1Sink(settings)
    sink.write(["m,run_id=r1 v=1.0 1700000000000", "m,run_id=r1 v=2.0 1700000001000"])
    sink.write([])  # an empty batch sends nothing
    sink.close()
    (seen,) = fake.requests_to("/write")
    assert seen.method == "POST"
    assert seen.query == {"db": ["metrics"], "rp": ["week"], "precision": ["ms"]}
    assert seen.body == b"m,run_id=r1 v=1.0 1700000000000\nm,run_id=r1 v=2.0 1700000001000"
    expected = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    assert PASSWORD not in json.dumps(seen.query), "the password must not travel in the URL"


def test_v1_check_pings_and_writes_an_empty_batch(fake: FakeServer) -> None:
    fake.route("GET", "/ping", Reply(204, influx1()))
    fake.route("POST", "/write", Reply(204, influx1()))
    description = V1Sink(InfluxSettings(url=fake.url)).check()
    assert "1.6.7~rc0" in description and fake.url in description and "'spike'" in description
    (write,) = fake.requests_to("/write")
    assert write.body == b""


def test_v1_wrong_password_is_rejected_with_a_fix_and_without_the_password(fake: FakeServer) -> None:
    fake.route("GET", "/ping", Reply(204, influx1()))
    fake.route("POST", "/write", error_reply(401, "authorization failed"))
    sink = V1Sink(InfluxSettings.from_env(fake.url, username="admin", environ={PASSWORD_ENV: PASSWORD}))
    for call in (sink.check, lambda: sink.write(["m v=1.0 1"])):
        with pytest.raises(SinkRejected) as info:
            call()
        text = info.value.render()
        assert fake.url in text and "authorization failed" in text and "401" in text
        assert f"${PASSWORD_ENV}" in text and "'admin'" in text
        assert PASSWORD not in text


def test_v1_missing_credentials_say_how_to_give_them(fake: FakeServer) -> None:
    fake.route("POST", "/write", error_reply(401, "unable to parse authentication credentials"))
    with pytest.raises(SinkRejected) as info:
        V1Sink(InfluxSettings(url=fake.url)).write(["m v=1.0 1"])
    assert PASSWORD_ENV in info.value.render() and "username" in info.value.render()


def test_v1_unknown_database_is_rejected_with_the_create_statement(fake: FakeServer) -> None:
    fake.route("POST", "/write", error_reply(404, 'database not found: "nope"'))
    with pytest.raises(SinkRejected) as info:
        V1Sink(InfluxSettings(url=fake.url, database="nope")).write(["m v=1.0 1"])
    assert "'nope' does not exist" in info.value.message
    assert 'CREATE DATABASE "nope"' in info.value.render()


def test_v1_bad_line_is_rejected_with_the_servers_message(fake: FakeServer) -> None:
    fake.route("POST", "/write", error_reply(400, "unable to parse 'm v=1 oops': bad timestamp"))
    with pytest.raises(SinkRejected, match="bad timestamp"):
        V1Sink(InfluxSettings(url=fake.url)).write(["m v=1 oops"])


def test_v1_unknown_retention_policy_500_is_rejected_not_retried(fake: FakeServer) -> None:
    fake.route("POST", "/write", error_reply(500, "retention policy not found: week"))
    with pytest.raises(SinkRejected, match="retention policy not found"):
        V1Sink(InfluxSettings(url=fake.url, retention_policy="week")).write(["m v=1.0 1"])


@pytest.mark.parametrize("status", [500, 503, 429])
def test_v1_server_failures_are_unavailable(fake: FakeServer, status: int) -> None:
    fake.route("POST", "/write", error_reply(status, "engine overloaded"))
    with pytest.raises(SinkUnavailable) as info:
        V1Sink(InfluxSettings(url=fake.url)).write(["m v=1.0 1"])
    assert fake.url in info.value.message and str(status) in info.value.message


def test_v1_timeout_is_unavailable_and_says_how_long(fake: FakeServer) -> None:
    fake.route("POST", "/write", Reply(204, influx1(), delay_s=1.0))
    started = time.monotonic()
    with pytest.raises(SinkUnavailable, match=r"no answer within 0\.3 s"):
        V1Sink(InfluxSettings(url=fake.url, timeout_s=0.3)).write(["m v=1.0 1"])
    assert time.monotonic() - started < 0.9


def test_v1_closed_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SinkUnavailable) as info:
        V1Sink(InfluxSettings(url=url)).write(["m v=1.0 1"])
    assert url in info.value.message and "spike stack up" in info.value.render()


def test_v1_reuses_one_connection(fake: FakeServer) -> None:
    fake.route("POST", "/write", Reply(204, influx1()))
    sink = V1Sink(InfluxSettings(url=fake.url))
    for i in range(5):
        sink.write([f"m v={i}.0 1"])
    sink.close()
    writes = fake.requests_to("/write")
    assert len(writes) == 5
    assert len({seen.client_port for seen in writes}) == 1, "keep-alive: every batch on one connection"


# ---------------------------------------------------------------- V2Sink


def v2_error(status: int, code: str, message: str) -> Reply:
    return Reply(
        status,
        {"X-Influxdb-Version": "v2.7.4", "Content-Type": "application/json"},
        json.dumps({"code": code, "message": message}).encode(),
    )


def test_v2_write_sends_token_org_bucket_and_ms_precision(fake: FakeServer) -> None:
    fake.route("POST", "/api/v2/write", Reply(204))
    settings = InfluxSettings.from_env(fake.url, org="acme", bucket="load", environ={TOKEN_ENV: TOKEN})
    sink = V2Sink(settings)
    sink.write(["m,run_id=r1 v=1.0 1700000000000", "m,run_id=r1 v=2.0 1700000001000"])
    sink.write([])
    sink.close()
    (seen,) = fake.requests_to("/api/v2/write")
    assert seen.query == {"org": ["acme"], "bucket": ["load"], "precision": ["ms"]}
    assert seen.body == b"m,run_id=r1 v=1.0 1700000000000\nm,run_id=r1 v=2.0 1700000001000"
    assert seen.headers["Authorization"] == f"Token {TOKEN}"


def test_v2_wrong_token_names_the_url_and_the_env_var_but_not_the_token(fake: FakeServer) -> None:
    fake.route("GET", "/ping", Reply(204, {"X-Influxdb-Version": "v2.7.4"}))
    fake.route("POST", "/api/v2/write", v2_error(401, "unauthorized", "unauthorized access"))
    sink = V2Sink(InfluxSettings.from_env(fake.url, org="acme", environ={TOKEN_ENV: TOKEN}))
    with pytest.raises(SinkRejected) as info:
        sink.check()
    sink.close()
    text = info.value.render()
    assert fake.url in text and "unauthorized access" in text
    assert f"${TOKEN_ENV}" in text
    assert TOKEN not in text


def test_v2_wrong_token_from_a_file_names_the_file(fake: FakeServer, tmp_path: Path) -> None:
    fake.route("POST", "/api/v2/write", v2_error(403, "forbidden", "insufficient permissions for write"))
    token_file = tmp_path / "influx-token"
    token_file.write_text(TOKEN + "\n")
    sink = V2Sink(InfluxSettings.from_env(fake.url, org="acme", token_file=token_file, environ={}))
    with pytest.raises(SinkRejected) as info:
        sink.write(["m v=1.0 1"])
    sink.close()
    assert str(token_file) in info.value.render() and TOKEN not in info.value.render()


def test_v2_no_token_says_how_to_give_one(fake: FakeServer) -> None:
    fake.route("POST", "/api/v2/write", v2_error(401, "unauthorized", "unauthorized access"))
    sink = V2Sink(InfluxSettings(url=fake.url))
    with pytest.raises(SinkRejected) as info:
        sink.write(["m v=1.0 1"])
    sink.close()
    assert TOKEN_ENV in info.value.render() and "token_file" in info.value.render()


def test_v2_check_accepts_influxdb2s_answer_to_an_empty_write(fake: FakeServer) -> None:
    fake.route("GET", "/ping", Reply(204, {"X-Influxdb-Version": "v2.7.4"}))
    fake.route("POST", "/api/v2/write", v2_error(400, "invalid", "writing requires points"))
    sink = V2Sink(InfluxSettings.from_env(fake.url, org="acme", environ={TOKEN_ENV: TOKEN}))
    description = sink.check()
    assert "v2.7.4" in description and "'spike'" in description and "'acme'" in description
    with pytest.raises(SinkRejected, match="writing requires points"):
        sink.write(["m v=1.0 1"])  # outside the preflight, a 400 is a rejection
    sink.close()


def test_v2_unknown_bucket_is_rejected(fake: FakeServer) -> None:
    fake.route("POST", "/api/v2/write", v2_error(404, "not found", 'bucket "load" not found'))
    sink = V2Sink(InfluxSettings(url=fake.url, org="acme", bucket="load"))
    with pytest.raises(SinkRejected, match='bucket "load" not found'):
        sink.write(["m v=1.0 1"])
    sink.close()


def test_v2_server_error_is_unavailable(fake: FakeServer) -> None:
    fake.route("POST", "/api/v2/write", v2_error(503, "unavailable", "service unavailable"))
    sink = V2Sink(InfluxSettings(url=fake.url))
    with pytest.raises(SinkUnavailable, match="503"):
        sink.write(["m v=1.0 1"])
    sink.close()


def test_v2_on_influxdb_1_8_uses_username_password_as_the_token(fake: FakeServer) -> None:
    fake.route("POST", "/api/v2/write", Reply(204, influx1("1.8.10")))
    settings = InfluxSettings.from_env(fake.url, username="admin", environ={PASSWORD_ENV: PASSWORD})
    sink = V2Sink(settings)
    sink.write(["m v=1.0 1"])
    sink.close()
    (seen,) = fake.requests_to("/api/v2/write")
    assert seen.headers["Authorization"] == f"Token admin:{PASSWORD}"


def test_v2_closed_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sink = V2Sink(InfluxSettings(url=url))
    with pytest.raises(SinkUnavailable) as info:
        sink.write(["m v=1.0 1"])
    sink.close()
    assert url in info.value.message and "Connection refused" in info.value.message


def test_a_server_that_echoes_the_secret_never_gets_it_into_the_message(fake: FakeServer) -> None:
    fake.route("POST", "/api/v2/write", v2_error(401, "unauthorized", f"token {TOKEN} is not valid"))
    fake.route("POST", "/write", error_reply(401, f"bad password {PASSWORD} for admin"))
    v2 = V2Sink(InfluxSettings.from_env(fake.url, environ={TOKEN_ENV: TOKEN}))
    with pytest.raises(SinkRejected) as info:
        v2.write(["m v=1.0 1"])
    v2.close()
    assert TOKEN not in info.value.render() and "token *** is not valid" in info.value.render()
    v1 = V1Sink(InfluxSettings.from_env(fake.url, username="admin", environ={PASSWORD_ENV: PASSWORD}))
    with pytest.raises(SinkRejected) as info:
        v1.write(["m v=1.0 1"])
    assert PASSWORD not in info.value.render() and "bad password ***" in info.value.render()
