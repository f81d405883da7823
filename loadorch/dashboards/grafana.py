"""Provisioning through Grafana's HTTP API (with `grafana-client`), and run annotations.

`push()` makes a Grafana hold spike's datasource, its "spike" folder and its
dashboards, whatever it held before, and can run any number of times: things
that exist are updated in place (by uid), never duplicated, and dashboards
that are already identical are left alone so their version history does not
grow with every push. `annotate()` marks a run's start and end.

grafana-client's exceptions stop here: each is translated into a spike error
that says what failed, at which Grafana, and what to do. The API key never
appears in a message, a log line or a repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from loadorch.dashboards.build import (
    DATASOURCE_NAMES,
    DATASOURCE_UIDS,
    DEFAULT_BUCKET,
    ENV_INFLUX_PASSWORD,
    ENV_INFLUX_TOKEN,
    FOLDER_TITLE,
    FOLDER_UID,
    dashboards,
)
from loadorch.dashboards.model import FLAVOURS, Flavour
from loadorch.errors import BadInputError, InfrastructureError, SpikeError

ENV_GRAFANA_KEY = "SPIKE_GRAFANA_KEY"
ENV_GRAFANA_KEY_FILE = "SPIKE_GRAFANA_KEY_FILE"
DEFAULT_TIMEOUT_S = 5.0
PUSH_MESSAGE = "pushed by spike dashboards push"

Outcome = Literal["created", "updated", "unchanged", "overwritten"]


class GrafanaError(InfrastructureError):
    """Grafana could not be reached or refused an operation for a reason other than the key."""


class GrafanaAuthError(BadInputError):
    """Grafana refused the API key (401) or the key's role is not enough (403)."""


class GrafanaKey:
    """A Grafana service-account token or API key that never shows itself.

    `repr()` and `str()` name only where the key came from, so the key cannot
    leak through an error message, a log line or a debugger's variable view.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The key itself: only for the Authorization header."""
        return self._value

    def __repr__(self) -> str:
        return f"GrafanaKey(source={self.source!r}, value='***')"

    __str__ = __repr__


def _key_fix() -> str:
    return (
        f"create a Grafana service-account token (role Admin: datasources need it) and set "
        f"{ENV_GRAFANA_KEY}, or write it to a file named by --grafana-key-file or {ENV_GRAFANA_KEY_FILE}"
    )


def load_key(key_file: Path | str | None = None, env: Mapping[str, str] | None = None) -> GrafanaKey:
    """The Grafana API key: from `key_file`, else $SPIKE_GRAFANA_KEY, else the file $SPIKE_GRAFANA_KEY_FILE."""
    env = os.environ if env is None else env
    if key_file is None and env.get(ENV_GRAFANA_KEY, "").strip():
        return GrafanaKey(env[ENV_GRAFANA_KEY].strip(), f"${ENV_GRAFANA_KEY}")
    if key_file is None and env.get(ENV_GRAFANA_KEY_FILE):
        key_file = env[ENV_GRAFANA_KEY_FILE]
    if key_file is None:
        raise GrafanaAuthError(f"no Grafana API key: {ENV_GRAFANA_KEY} is not set", fix=_key_fix())
    path = Path(key_file)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise GrafanaAuthError(
            f"cannot read the Grafana API key file: {exc.strerror}", where=str(path), fix=_key_fix()
        ) from None
    if not value:
        raise GrafanaAuthError("the Grafana API key file is empty", where=str(path), fix=_key_fix())
    return GrafanaKey(value, str(path))


@dataclass(frozen=True)
class DatasourceSettings:
    """Where Grafana reaches InfluxDB, as seen from Grafana (not necessarily from here).

    `password` (1.x) and `token` (2.x) are secrets: excluded from repr, and
    read from $SPIKE_INFLUX_PASSWORD / $SPIKE_INFLUX_TOKEN by `from_env`.
    """

    url: str = "http://127.0.0.1:8086"
    flavour: Flavour = "influxql"
    database: str = "spike"
    user: str = ""
    password: str = field(default="", repr=False)
    org: str = "spike"
    bucket: str = DEFAULT_BUCKET
    token: str = field(default="", repr=False)

    @classmethod
    def from_env(
        cls,
        url: str = "http://127.0.0.1:8086",
        flavour: Flavour = "influxql",
        *,
        database: str = "spike",
        user: str = "",
        org: str = "spike",
        bucket: str = DEFAULT_BUCKET,
        env: Mapping[str, str] | None = None,
    ) -> DatasourceSettings:
        """Settings with the secret of `flavour` read from the environment."""
        env = os.environ if env is None else env
        if flavour not in FLAVOURS:
            raise BadInputError(f"unknown flavour {flavour!r}; valid values: {', '.join(FLAVOURS)}")
        token = env.get(ENV_INFLUX_TOKEN, "")
        if flavour == "flux" and not token:
            raise BadInputError(
                f"InfluxDB 2.x needs a token and {ENV_INFLUX_TOKEN} is not set",
                fix=f"set {ENV_INFLUX_TOKEN} to a read token for bucket {bucket!r}, or use --flavour influxql",
            )
        return cls(
            url=url,
            flavour=flavour,
            database=database,
            user=user,
            # A password without a user is meaningless to InfluxDB 1.x (and may be
            # left over from another tool): only sent with a user.
            password=env.get(ENV_INFLUX_PASSWORD, "") if user else "",
            org=org,
            bucket=bucket,
            token=token,
        )


def datasource_payload(influx: DatasourceSettings) -> dict[str, Any]:
    """The body of POST /api/datasources (and PUT by uid) for spike's InfluxDB datasource."""
    body: dict[str, Any] = {
        "name": DATASOURCE_NAMES[influx.flavour],
        "uid": DATASOURCE_UIDS[influx.flavour],
        "type": "influxdb",
        "access": "proxy",
        "url": influx.url,
        "isDefault": False,
    }
    if influx.flavour == "influxql":
        body.update(
            user=influx.user,
            database=influx.database,
            jsonData={"dbName": influx.database, "httpMode": "POST"},
            secureJsonData={"password": influx.password} if influx.password else {},
        )
    else:
        body.update(
            jsonData={"version": "Flux", "organization": influx.org, "defaultBucket": influx.bucket},
            secureJsonData={"token": influx.token},
        )
    return body


@dataclass
class PushReport:
    """What `push` did to each thing, by kind and uid."""

    grafana_url: str
    datasource: Outcome = "unchanged"
    folder: Outcome = "unchanged"
    dashboards: dict[str, Outcome] = field(default_factory=dict)


def _redacted(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _client(grafana_url: str, key: GrafanaKey, timeout_s: float) -> GrafanaApi:
    if not key.reveal():
        raise GrafanaAuthError(f"the Grafana API key from {key.source} is empty", fix=_key_fix())
    if not re.fullmatch(r"[\x21-\x7e]+", key.reveal()):
        # Checked here because the HTTP library's own complaint would quote the header, key included.
        raise GrafanaAuthError(
            f"the Grafana API key from {key.source} contains spaces or characters an HTTP header cannot carry",
            fix=_key_fix(),
        )
    parts = urlsplit(grafana_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInputError(
            f"not a Grafana URL: {_redacted(grafana_url)!r}",
            fix="pass --grafana-url like http://127.0.0.1:3000 (with a path if Grafana is served under one)",
        )
    # grafana-client joins the prefix and "api" without a separator.
    prefix = parts.path.strip("/")
    return GrafanaApi(
        auth=key.reveal(),
        host=parts.hostname,
        port=parts.port,
        url_path_prefix=f"{prefix}/" if prefix else "",
        protocol=parts.scheme,
        timeout=timeout_s,
    )


@contextmanager
def _session(grafana_url: str, key: GrafanaKey, timeout_s: float) -> Iterator[GrafanaApi]:
    """A client whose pooled connections are closed when the operation ends."""
    api = _client(grafana_url, key, timeout_s)
    try:
        yield api
    finally:
        api.client.s.close()


def _response_message(exc: GrafanaException) -> str:
    response = exc.response
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return str(exc.message)


def _translate(exc: Exception, url: str, key: GrafanaKey, action: str) -> SpikeError | None:
    """The spike error for a grafana-client or transport exception; None for anything else."""
    if isinstance(exc, GrafanaUnauthorizedError):
        return GrafanaAuthError(
            f"Grafana at {url} refused the API key from {key.source} (401 Unauthorized) while trying "
            f"to {action}: the key is missing, invalid, expired or for another Grafana",
            fix=_key_fix(),
        )
    if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
        return GrafanaAuthError(
            f"Grafana at {url} accepted the API key from {key.source} but its role may not "
            f"{action} (403 Forbidden: {_response_message(exc)})",
            fix="give the service account the Admin role (datasources) or at least Editor "
            "(folders, dashboards, annotations)",
        )
    if isinstance(exc, GrafanaClientError):
        return GrafanaError(
            f"Grafana at {url} refused to {action}: {exc.status_code} {_response_message(exc)}"
        )
    if isinstance(exc, GrafanaTimeoutError):
        return GrafanaError(
            f"Grafana at {url} did not answer in time while trying to {action}",
            fix="check Grafana is up and not overloaded, or raise --timeout",
        )
    if isinstance(exc, GrafanaServerError):
        return GrafanaError(
            f"Grafana at {url} failed to {action}: {exc.status_code} {_response_message(exc)}",
            fix="see Grafana's server log",
        )
    if isinstance(exc, GrafanaException):
        return GrafanaError(f"cannot talk to Grafana at {url} to {action}: {exc.message}")
    if isinstance(exc, OSError):
        # niquests' ConnectionError (refused, DNS, TLS) is an OSError that
        # grafana-client lets through untranslated.
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return GrafanaError(
            f"cannot reach Grafana at {url}: {reason}", fix="start Grafana or pass the right --grafana-url"
        )
    return None


def _scrub(error: SpikeError, secrets: Sequence[str]) -> SpikeError:
    """Replace every secret in a spike error's text by '***' (a server may echo what it was sent)."""
    for secret in secrets:
        error.message = error.message.replace(secret, "***")
        error.where = error.where.replace(secret, "***") if error.where else error.where
        error.fix = error.fix.replace(secret, "***") if error.fix else error.fix
    error.args = (error.render(),)
    return error


@contextmanager
def _translated(
    grafana_url: str, key: GrafanaKey, action: str, secrets: Sequence[str] = ()
) -> Iterator[None]:
    """Turn grafana-client and transport exceptions into spike errors, here where they enter.

    Whatever is raised is scrubbed of the key and `secrets`; the original
    exception stays chained (for --debug) only when it does not hold them.
    """
    url = _redacted(grafana_url)
    hidden = [s for s in (key.reveal(), *secrets) if s]
    try:
        yield
    except SpikeError as exc:
        _scrub(exc, hidden)
        raise
    except Exception as exc:
        error = _translate(exc, url, key, action)
        if error is None:
            raise
        leaks = isinstance(error, GrafanaAuthError) or any(s in repr(exc) for s in hidden)
        raise _scrub(error, hidden) from (None if leaks else exc)


def _status(exc: GrafanaClientError) -> str:
    return str(exc.response.get("status", "")) if isinstance(exc.response, dict) else ""


def _get_or_none(fetch: Any, *args: Any) -> dict[str, Any] | None:
    """GET something by uid; None when Grafana says 404."""
    try:
        result = fetch(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise
    return result if isinstance(result, dict) else None


def _ensure_datasource(api: GrafanaApi, influx: DatasourceSettings) -> Outcome:
    body = datasource_payload(influx)
    uid = body["uid"]
    existing = _get_or_none(api.datasource.get_datasource_by_uid, uid)
    if existing is None:
        try:
            api.datasource.create_datasource(body)
        except GrafanaClientError as exc:
            if exc.status_code != 409:
                raise
            raise GrafanaError(
                f"Grafana already has a datasource named {body['name']!r} with a uid other than {uid!r}",
                fix="delete or rename that datasource in Grafana (Connections > Data sources), then push again",
            ) from exc
        return "created"
    # Secrets are write-only in Grafana, so an update is always sent: PUT by
    # uid replaces the one datasource and can never duplicate it.
    try:
        api.datasource.update_datasource_by_uid(uid, {**body, "version": existing.get("version")})
    except GrafanaClientError as exc:
        if exc.status_code != 409:
            raise
        # Saved by someone else since our GET: the code defines this datasource,
        # so re-read the version and replace it once.
        latest = _get_or_none(api.datasource.get_datasource_by_uid, uid) or {}
        api.datasource.update_datasource_by_uid(uid, {**body, "version": latest.get("version")})
    return "updated"


def _ensure_folder(api: GrafanaApi) -> Outcome:
    existing = _get_or_none(api.folder.get_folder, FOLDER_UID)
    if existing is None:
        try:
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        except GrafanaClientError as exc:
            if exc.status_code != 409:
                raise
            if _get_or_none(api.folder.get_folder, FOLDER_UID) is None:
                raise GrafanaError(
                    f"Grafana already has a folder titled {FOLDER_TITLE!r} with a uid other than {FOLDER_UID!r}",
                    fix="rename or delete that folder in Grafana, then push again",
                ) from exc
            return "unchanged"  # created meanwhile by a concurrent push
        return "created"
    if existing.get("title") == FOLDER_TITLE:
        return "unchanged"
    try:
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, version=existing.get("version"))
    except GrafanaClientError as exc:
        if exc.status_code != 412:
            raise
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        return "overwritten"
    return "updated"


# Grafana adds these to a stored dashboard; they say nothing about its content.
_INSTANCE_FIELDS = ("id", "version", "iteration")


def _same_dashboard(stored: Mapping[str, Any], ours: Mapping[str, Any]) -> bool:
    return {k: v for k, v in stored.items() if k not in _INSTANCE_FIELDS} == dict(ours)


def _ensure_dashboard(api: GrafanaApi, dashboard: dict[str, Any]) -> Outcome:
    uid = dashboard["uid"]
    existing = _get_or_none(api.dashboard.get_dashboard, uid)
    version = 0
    if existing is not None:
        stored = existing.get("dashboard") or {}
        in_folder = (existing.get("meta") or {}).get("folderUid") == FOLDER_UID
        if in_folder and _same_dashboard(stored, dashboard):
            return "unchanged"
        version = int(stored.get("version") or 0)
    payload = {
        # The version we saw: Grafana answers 412 if someone saved since.
        "dashboard": {**dashboard, "id": None, "version": version},
        "folderUid": FOLDER_UID,
        "message": PUSH_MESSAGE,
        "overwrite": False,
    }
    try:
        api.dashboard.update_dashboard(payload)
    except GrafanaClientError as exc:
        if exc.status_code != 412:
            raise
        if _status(exc) != "version-mismatch":
            raise GrafanaError(
                f"Grafana refused dashboard {uid!r} ({dashboard['title']!r}): {_response_message(exc)}",
                fix=f"another dashboard in folder {FOLDER_TITLE!r} has the same title; rename or delete it",
            ) from exc
        # The code is the source of truth for spike's dashboards: a change made
        # in the UI since our GET is replaced, once, on purpose.
        try:
            api.dashboard.update_dashboard({**payload, "overwrite": True})
        except GrafanaClientError as again:
            if again.status_code != 412:
                raise
            raise GrafanaError(
                f"Grafana kept refusing dashboard {uid!r} with a version conflict even with overwrite: "
                f"{_response_message(again)}",
                fix="check no other tool is saving it in a loop, then push again",
            ) from again
        return "overwritten"
    return "created" if existing is None else "updated"


def push(
    grafana_url: str,
    key: GrafanaKey,
    influx: DatasourceSettings,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> PushReport:
    """Make Grafana hold spike's datasource, folder and dashboards for `influx.flavour`.

    Idempotent: creates what is missing, updates by uid what differs, leaves
    identical dashboards alone. Raises GrafanaAuthError for a missing,
    invalid or under-privileged key and GrafanaError for anything else.
    """
    report = PushReport(_redacted(grafana_url))
    secrets = [s for s in (influx.password, influx.token) if s]
    with _session(grafana_url, key, timeout_s) as api:
        with _translated(
            grafana_url, key, f"create or update datasource {DATASOURCE_UIDS[influx.flavour]!r}", secrets
        ):
            report.datasource = _ensure_datasource(api, influx)
        with _translated(grafana_url, key, f"create folder {FOLDER_UID!r}"):
            report.folder = _ensure_folder(api)
        for dashboard in dashboards(influx.flavour, bucket=influx.bucket):
            with _translated(grafana_url, key, f"save dashboard {dashboard['uid']!r}"):
                report.dashboards[dashboard["uid"]] = _ensure_dashboard(api, dashboard)
    return report


def run_tags(run_id: str, tags: Sequence[str] = ()) -> list[str]:
    """The tags of a run's annotations; the live dashboard shows those tagged spike + run_id:<id>."""
    return ["spike", f"run_id:{run_id}", *tags]


def annotate(
    grafana_url: str,
    key: GrafanaKey,
    run_id: str,
    time_ms: int,
    text: str,
    tags: Sequence[str] = (),
    *,
    time_end_ms: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Post an organisation-wide annotation for a run (start, end); returns its id.

    It is not tied to one dashboard, so every dashboard filtering on the
    run's tags shows it, whichever flavour was pushed.
    """
    with (
        _session(grafana_url, key, timeout_s) as api,
        _translated(grafana_url, key, f"add an annotation for run {run_id}"),
    ):
        answer = api.annotations.add_annotation(
            time_from=time_ms, time_to=time_end_ms, tags=run_tags(run_id, tags), text=text
        )
    return int(answer.get("id", 0)) if isinstance(answer, dict) else 0
