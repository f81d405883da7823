"""InfluxDB sinks: v1 `/write` (InfluxDB 1.x) and v2 `/api/v2/write` (InfluxDB 1.8+, 2.x, 3.x, VictoriaMetrics).

Both sinks take batches of line-protocol lines with millisecond timestamps (see
`schema.line`) and translate every failure where it enters spike:

* the server cannot be reached, times out, or answers 5xx/429 -> `SinkUnavailable`
  (transient: the caller may retry the batch later);
* the server refuses the data for good (401/403 credentials, 404 unknown database or
  bucket, 400 bad line) -> `SinkRejected`, with the server's own message and a fix.

Secrets (the v2 token, the v1 password) never come from profiles: they are read from
the environment (`SPIKE_INFLUX_TOKEN`, `SPIKE_INFLUX_PASSWORD`) or from files named
in the profile (`token_file`, `password_file`), never appear in a repr, and are
scrubbed from every message spike builds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import urlencode, urlsplit

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from loadorch.errors import BadInputError, SpikeError
from loadorch.metrics.sink import Sink, SinkRejected, SinkUnavailable

ApiChoice = Literal["auto", "v1", "v2"]
ResolvedApi = Literal["v1", "v2"]

TOKEN_ENV = "SPIKE_INFLUX_TOKEN"
PASSWORD_ENV = "SPIKE_INFLUX_PASSWORD"
VERSION_HEADER = "X-Influxdb-Version"

# WritePrecision's members are plain strings although WriteApi.write is annotated to take the class.
_MS = cast(WritePrecision, WritePrecision.MS)
# A server message can echo a whole batch; messages stay readable at this length.
_MAX_SERVER_MESSAGE = 400


def _read_secret_file(path: Path, what: str, setting: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(
            f"cannot read the {what} from {setting} {path}: {exc.strerror or exc}",
            fix=f"point {setting} at a readable file that holds only the {what}",
        ) from None
    # Only the line ending an editor adds is dropped: a secret may legitimately end in spaces.
    secret = text.rstrip("\r\n")
    if not secret:
        raise BadInputError(f"the {setting} {path} is empty", fix=f"write the {what} into {path} (one line)")
    return secret


def _secret(
    env_name: str, file: str | Path | None, what: str, setting: str, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """(secret, where it came from). A file named in the profile wins over the ambient variable."""
    if file is not None:
        path = Path(file).expanduser()
        return _read_secret_file(path, what, setting), f"{setting} {path}"
    value = environ.get(env_name)
    if value:
        return value, f"${env_name}"
    return None, None


@dataclass(frozen=True, repr=False)
class InfluxSettings:
    """Where live metrics go. Secrets are never plain profile fields: use `from_env`."""

    url: str
    api: ApiChoice = "auto"
    # v1 (InfluxDB 1.x `/write`)
    database: str = "spike"
    retention_policy: str | None = None
    username: str | None = None
    # v2 (`/api/v2/write`)
    org: str | None = None
    bucket: str = "spike"
    # Secrets, and where each came from (for messages that say how to fix them).
    token: str | None = None
    password: str | None = None
    token_source: str | None = None
    password_source: str | None = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        url = self.url.strip().rstrip("/")
        parts = urlsplit(url)
        if "@" in parts.netloc or (parts.scheme not in ("http", "https") and "@" in url):
            # Credentials in URLs end up in logs and messages; refuse them, without echoing the URL.
            raise BadInputError(
                "the InfluxDB url must not contain credentials",
                fix=f"drop them from the URL; set ${TOKEN_ENV} (v2) or username plus ${PASSWORD_ENV} (v1)",
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInputError(
                f"InfluxDB url {self.url!r} is not an http(s) URL",
                fix="give the server's base URL, e.g. http://127.0.0.1:8086",
            )
        object.__setattr__(self, "url", url)
        if self.api not in get_args(ApiChoice):
            raise BadInputError(
                f"unknown InfluxDB api {self.api!r}", fix="use one of: auto, v1, v2 (auto asks the server)"
            )
        if self.timeout_s <= 0:
            raise BadInputError(f"InfluxDB timeout must be positive, got {self.timeout_s}")
        if self.password and not self.username:
            raise BadInputError(
                f"an InfluxDB password is set (from {self.password_source or 'the settings'}) but no username",
                fix="set the username next to the InfluxDB url",
            )
        if self.username and not self.password and not self.token:
            raise BadInputError(
                f"InfluxDB username {self.username!r} is set but no password",
                fix=f"export {PASSWORD_ENV}=... or name a password_file",
            )

    @classmethod
    def from_env(
        cls,
        url: str,
        *,
        api: ApiChoice = "auto",
        database: str = "spike",
        retention_policy: str | None = None,
        username: str | None = None,
        org: str | None = None,
        bucket: str = "spike",
        token_file: str | Path | None = None,
        password_file: str | Path | None = None,
        timeout_s: float = 5.0,
        environ: Mapping[str, str] | None = None,
    ) -> InfluxSettings:
        """Settings whose token/password come from `token_file`/`password_file` or the environment."""
        env = os.environ if environ is None else environ
        token, token_source = _secret(TOKEN_ENV, token_file, "InfluxDB token", "token_file", env)
        password, password_source = _secret(
            PASSWORD_ENV, password_file, "InfluxDB password", "password_file", env
        )
        if password is not None and username is None and password_file is None:
            # An exported password alone is ambient noise (e.g. left from another tool); ignore it
            # rather than fail every run that does not use v1 authentication.
            password, password_source = None, None
        return cls(
            url=url,
            api=api,
            database=database,
            retention_policy=retention_policy,
            username=username,
            org=org,
            bucket=bucket,
            token=token,
            password=password,
            token_source=token_source,
            password_source=password_source,
            timeout_s=timeout_s,
        )

    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold (to scrub them from messages)."""
        return tuple(s for s in (self.token, self.password) if s)

    def __repr__(self) -> str:
        shown = {
            "url": self.url,
            "api": self.api,
            "database": self.database,
            "retention_policy": self.retention_policy,
            "username": self.username,
            "org": self.org,
            "bucket": self.bucket,
            "token": f"<set from {self.token_source or 'settings'}>" if self.token else None,
            "password": f"<set from {self.password_source or 'settings'}>" if self.password else None,
            "timeout_s": self.timeout_s,
        }
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items() if v is not None)
        return f"InfluxSettings({inner})"

    __str__ = __repr__


# ---------------------------------------------------------------- helpers


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _new_pool(timeout_s: float, maxsize: int = 1) -> urllib3.PoolManager:
    # retries=False: a failed write surfaces at once as SinkUnavailable; the caller owns the retry policy.
    return urllib3.PoolManager(
        num_pools=2,
        maxsize=maxsize,
        retries=False,
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
    )


def _transport_reason(exc: BaseException, timeout_s: float) -> str:
    """A short, human reason for a urllib3 transport failure (no object reprs)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return _transport_reason(exc.reason, timeout_s)
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2.x, so test it first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        found = re.search(r"\[Errno -?\d+\] (.+)$", str(exc))
        return f"cannot connect: {found.group(1) if found else 'connection failed'}"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection within {timeout_s:g} s"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "the connection broke off"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "TLS handshake failed"
    text = str(exc).split(": ", 1)[-1]
    return text or type(exc).__name__


def _unavailable(url: str, exc: BaseException, timeout_s: float, secrets: Sequence[str]) -> SinkUnavailable:
    return SinkUnavailable(
        _scrub(f"InfluxDB at {url} is unreachable ({_transport_reason(exc, timeout_s)})", secrets),
        fix="check that the server runs and the URL is right; `spike stack up` starts a local one",
    )


@dataclass(frozen=True)
class QueryAnswer:
    """InfluxDB's answer to one query: the HTTP status and the body as text."""

    status: int
    body: str


def run_query(
    url: str,
    query: str,
    *,
    language: str,
    database: str | None = None,
    org: str | None = None,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> QueryAnswer:
    """One query over the same HTTP stack as the sinks: InfluxQL to v1 `/query` (epoch ms, JSON),
    Flux to v2 `/api/v2/query` (annotated CSV). A token goes in `Authorization: Token` and never into
    an error. A transport failure raises SinkUnavailable; any HTTP answer is returned for the caller
    to judge (a 400 is a bad query, a 401 bad credentials).
    """
    base = url.rstrip("/")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    if language == "influxql":
        fields = {"q": query, "epoch": "ms", **({"db": database} if database else {})}
        target = f"{base}/query"
        body = urlencode(fields).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        target = f"{base}/api/v2/query" + (f"?{urlencode({'org': org})}" if org else "")
        body = json.dumps(
            {
                "query": query,
                "type": "flux",
                "dialect": {"header": True, "annotations": ["datatype", "group", "default"]},
            }
        ).encode()
        headers.update({"Accept": "application/csv", "Content-Type": "application/json"})
    http = _new_pool(timeout_s)
    try:
        response = http.request("POST", target, body=body, headers=headers)
    except urllib3.exceptions.HTTPError as exc:
        raise _unavailable(url, exc, timeout_s, (token or "",)) from None
    finally:
        http.clear()
    return QueryAnswer(response.status, _scrub(response.data.decode("utf-8", "replace"), (token or "",)))


def server_message(body: bytes | str | None, headers: Mapping[str, str] | None, fallback: str) -> str:
    """The server's own explanation: JSON `error`/`message`, the X-Influxdb-Error header, or the body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for key in ("error", "message"):
                if isinstance(doc.get(key), str) and doc[key]:
                    return str(doc[key])[:_MAX_SERVER_MESSAGE]
    if headers is not None:
        for name in ("X-Influxdb-Error", "X-Platform-Error-Code"):
            value = headers.get(name)
            if value:
                return str(value)[:_MAX_SERVER_MESSAGE]
    return (text or fallback)[:_MAX_SERVER_MESSAGE]


def _credentials_fix(settings: InfluxSettings, api: ResolvedApi) -> str:
    if api == "v2" and settings.token:
        return f"check the token from {settings.token_source or 'the settings'}: it must be valid on this server and allowed to write to bucket {settings.bucket!r}"
    if api == "v2":
        return f"the server wants a token: export {TOKEN_ENV}=... or name a token_file"
    if settings.username:
        return f"check username {settings.username!r} and the password from {settings.password_source or 'the settings'}"
    return f"the server wants credentials: set a username and export {PASSWORD_ENV}=... (or name a password_file)"


def _http_error(
    settings: InfluxSettings, api: ResolvedApi, status: int, message: str, what: str
) -> SpikeError:
    """Map an HTTP failure to SinkRejected (permanent) or SinkUnavailable (retry later)."""
    url, secrets = settings.url, settings.secrets()

    def rejected(text: str, fix: str | None = None) -> SinkRejected:
        return SinkRejected(_scrub(text, secrets), fix=_scrub(fix, secrets) if fix else None)

    if status in (401, 403):
        return rejected(
            f"InfluxDB at {url} refused the credentials for {what} ({status}: {message})",
            _credentials_fix(settings, api),
        )
    if status == 404:
        lowered = message.lower()
        if api == "v1" and "database" in lowered:
            return rejected(
                f"InfluxDB at {url}: database {settings.database!r} does not exist ({message})",
                f"create it (`CREATE DATABASE \"{settings.database}\"`; `spike stack up` creates 'spike') or set database",
            )
        if api == "v2" and ("bucket" in lowered or "organization" in lowered or "org " in lowered):
            return rejected(
                f"InfluxDB at {url}: {message} (org {settings.org or '(none)'!r}, bucket {settings.bucket!r})",
                "create the bucket or fix org/bucket in the metrics settings",
            )
        endpoint = "/write" if api == "v1" else "/api/v2/write"
        fix = (
            "InfluxDB before 1.8 has only the v1 API: set api to v1 or auto"
            if api == "v2"
            else "is this an InfluxDB URL? set api to v2 or auto for servers without /write"
        )
        return rejected(f"{url} has no {endpoint} endpoint (404: {message})", fix)
    if status == 429 or status >= 500:
        if status >= 500 and "not found" in message.lower():
            # InfluxDB 1.x answers an unknown retention policy with 500; retrying cannot help.
            fix = (
                "create it or fix retention_policy in the metrics settings"
                if "retention policy" in message.lower()
                else "the server lacks something this write needs; fix the metrics settings"
            )
            return rejected(f"InfluxDB at {url} refused {what} ({status}: {message})", fix)
        return SinkUnavailable(
            _scrub(f"InfluxDB at {url} failed {what} ({status}: {message})", secrets),
            fix="the server is overloaded or failing: retry later, and read its log if this persists",
        )
    return rejected(f"InfluxDB at {url} rejected {what} ({status}: {message})")


def api_for_version(version: str) -> ResolvedApi | None:
    """The write API a server of this `X-Influxdb-Version` speaks best; None if the text is no version.

    1.8 added `/api/v2/write` to InfluxDB 1.x; 2.x and 3.x have it natively.
    """
    found = re.match(r"\s*v?(\d+)\.(\d+)", version)
    if found is None:
        return None
    major, minor = int(found.group(1)), int(found.group(2))
    if major >= 2 or (major == 1 and minor >= 8):
        return "v2"
    return "v1"


def _ping(http: urllib3.PoolManager, url: str, timeout_s: float, secrets: Sequence[str]) -> Any:
    try:
        return http.request("GET", f"{url}/ping")
    except urllib3.exceptions.HTTPError as exc:
        raise _unavailable(url, exc, timeout_s, secrets) from None


def detect_api(url: str, timeout_s: float = 5.0) -> tuple[ResolvedApi, str]:
    """Ask the server which write API to use: ("v1" | "v2", its version text).

    GET /ping and read `X-Influxdb-Version`. Servers that answer /ping without
    a version (VictoriaMetrics) are probed with an empty POST to /api/v2/write:
    any answer but 404/405 means the endpoint exists.
    """
    url = url.rstrip("/")
    http = _new_pool(timeout_s)
    try:
        ping = _ping(http, url, timeout_s, ())
        header = ping.headers.get(VERSION_HEADER, "")
        api = api_for_version(header) if header else None
        if api is not None:
            return api, header
        try:
            probe = http.request(
                "POST",
                f"{url}/api/v2/write?{urlencode({'org': '', 'bucket': 'spike', 'precision': 'ms'})}",
                body=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(url, exc, timeout_s, ()) from None
        if probe.status not in (404, 405):
            probe_version = probe.headers.get(VERSION_HEADER)
            described = header or "unknown"
            if probe_version:
                described = f"{described} (/api/v2/write says {probe_version})"
            return "v2", described
        if ping.status < 300 or ping.status in (401, 403):
            return "v1", header or "unknown"
        raise SinkRejected(
            f"{url} does not look like InfluxDB: /ping answered {ping.status} and /api/v2/write {probe.status}",
            fix="give the base URL of an InfluxDB (or compatible) server, e.g. http://127.0.0.1:8086",
        )
    finally:
        http.clear()


# ---------------------------------------------------------------- sinks


class V1Sink:
    """InfluxDB 1.x: POST /write?db=&rp=&precision=ms, basic auth, one keep-alive connection."""

    api: ResolvedApi = "v1"

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.url = settings.url
        params = {"db": settings.database, "precision": "ms"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        self._write_url = f"{self.url}/write?{urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            # Basic auth rather than u=/p= query parameters: URLs end up in logs, headers do not.
            self._headers.update(
                urllib3.make_headers(basic_auth=f"{settings.username}:{settings.password or ''}")
            )
        self._http = _new_pool(settings.timeout_s)

    def _post(self, body: bytes, what: str) -> None:
        try:
            resp = self._http.request("POST", self._write_url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(self.url, exc, self.settings.timeout_s, self.settings.secrets()) from None
        if resp.status >= 300:
            message = server_message(resp.data, resp.headers, resp.reason or str(resp.status))
            raise _http_error(self.settings, "v1", resp.status, message, what)

    def write(self, lines: Sequence[str]) -> None:
        """Write one batch (an empty batch sends nothing)."""
        if not lines:
            return
        self._post("\n".join(lines).encode("utf-8"), f"a batch of {len(lines)} points")

    def check(self) -> str:
        """Ping, then write an empty batch: InfluxDB checks credentials, database and policy for it."""
        ping = _ping(self._http, self.url, self.settings.timeout_s, self.settings.secrets())
        version = ping.headers.get(VERSION_HEADER, "unknown version")
        self._post(b"", "the preflight write")
        target = repr(self.settings.database)
        if self.settings.retention_policy:
            target += f" (retention policy {self.settings.retention_policy!r})"
        who = f" as {self.settings.username!r}" if self.settings.username else ""
        return f"InfluxDB {version} at {self.url}: database {target} accepts writes{who} (v1 /write)"

    def close(self) -> None:
        self._http.clear()


class V2Sink:
    """`/api/v2/write` through influxdb-client's synchronous WriteApi (precision ms)."""

    api: ResolvedApi = "v2"

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.url = settings.url
        token = settings.token
        if token is None and settings.username and settings.password:
            # InfluxDB 1.8's /api/v2/write takes "username:password" as its token.
            token = f"{settings.username}:{settings.password}"
        self._token = token
        self._org = settings.org or ""
        self._client = InfluxDBClient(
            url=self.url,
            token=token or "",
            org=self._org,
            timeout=int(settings.timeout_s * 1000),
            retries=False,  # the caller owns retries; a failure must surface at once
            enable_gzip=False,
        )
        self._write_api: WriteApi | None = self._client.write_api(write_options=SYNCHRONOUS)

    def _secrets(self) -> tuple[str, ...]:
        return (*self.settings.secrets(), *((self._token,) if self._token else ()))

    def _write(self, record: str | bytes, what: str) -> None:
        if self._write_api is None:
            raise SinkUnavailable(
                f"the sink for {self.url} is closed", fix="this is a bug in spike: report it"
            )
        try:
            self._write_api.write(
                bucket=self.settings.bucket,
                org=self._org,
                record=record,
                write_precision=_MS,
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            message = server_message(exc.body, exc.headers, exc.reason or str(status))
            raise _http_error(self.settings, "v2", status, _scrub(message, self._secrets()), what) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _unavailable(self.url, exc, self.settings.timeout_s, self._secrets()) from None

    def write(self, lines: Sequence[str]) -> None:
        """Write one batch (an empty batch sends nothing)."""
        if not lines:
            return
        self._write("\n".join(lines), f"a batch of {len(lines)} points")

    def check(self) -> str:
        """Ping, then POST an empty body: the server checks token, org and bucket before the body."""
        http = _new_pool(self.settings.timeout_s)
        try:
            ping = _ping(http, self.url, self.settings.timeout_s, self._secrets())
        finally:
            http.clear()
        version = ping.headers.get(VERSION_HEADER)
        # VictoriaMetrics answers /ping without a version header.
        server = f"InfluxDB {version}" if version else "InfluxDB-compatible server (no version on /ping)"
        try:
            self._write(b"", "the preflight write")
        except SinkRejected as exc:
            # InfluxDB 2.x answers an authorised empty write with 400 "writing requires points".
            if "requires points" not in exc.message:
                raise
        return (
            f"{server} at {self.url}: bucket {self.settings.bucket!r}"
            f"{f' in org {self._org!r}' if self._org else ''} accepts writes (v2 /api/v2/write)"
        )

    def close(self) -> None:
        if self._write_api is None:
            return
        self._write_api.close()
        self._client.close()
        # Drop the last references now: influxdb-client's ApiClient.__del__ clears its pool again,
        # and at interpreter exit (urllib3 half torn down) that prints a spurious traceback.
        self._write_api = None


def make_sink(settings: InfluxSettings) -> Sink:
    """A V1Sink or V2Sink for these settings; `api="auto"` asks the server (see `detect_api`)."""
    api: ResolvedApi
    if settings.api == "auto":
        api, _version = detect_api(settings.url, settings.timeout_s)
    else:
        api = settings.api
    return V1Sink(settings) if api == "v1" else V2Sink(settings)
