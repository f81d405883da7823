"""A local stand-in for Grafana's HTTP API, for contract tests of `loadorch.dashboards.grafana`.

No Grafana server can be installed on this machine, so this fake implements
exactly the endpoints grafana-client calls for spike's operations, with the
status codes and error bodies Grafana documents for them:

    GET  /api/datasources/uid/:uid   200 | 404 absent
    POST /api/datasources            200 | 409 name (or uid) exists | 400 bad body
    PUT  /api/datasources/uid/:uid   200 | 404 absent | 409 stale version or name taken
    GET  /api/folders/:uid           200 | 404 absent
    POST /api/folders                200 | 409 title (or uid) exists | 400 bad body
    PUT  /api/folders/:uid           200 | 404 absent | 412 version mismatch without overwrite
    GET  /api/dashboards/uid/:uid    200 | 404 absent
    POST /api/dashboards/db          200 | 412 version-mismatch / name-exists without overwrite
                                     | 400 bad body or unknown folder
    POST /api/annotations            200 | 400 bad body

and, on every endpoint: 401 when the `Authorization: Bearer <key>` header is
missing or names an unknown key; 403 when the key's role may not do it
(datasources need Admin; writes to folders, dashboards and annotations need
Editor). It listens on 127.0.0.1 on a free port and records every request.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROLES = ("Viewer", "Editor", "Admin")


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    body: Any = None


def _forbidden(permission: str) -> Answer:
    return Answer(
        403,
        {
            "accessErrorId": "ACE0000000001",
            "message": f"You'll need additional permissions to perform this action. Permissions needed: {permission}",
            "title": "Access denied",
        },
    )


@dataclass
class FakeGrafanaState:
    """Everything the fake holds; tests read and change it directly."""

    keys: dict[str, str] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    saved_elsewhere: set[str] = field(default_factory=set)
    """Dashboard uids someone saves in the UI right before spike's next POST (a race)."""
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # -- datasources ---------------------------------------------------------------

    def _datasource_view(self, ds: dict[str, Any]) -> dict[str, Any]:
        # Grafana never returns secrets, only which ones are set.
        view = {k: v for k, v in ds.items() if k != "secureJsonData"}
        view["secureJsonFields"] = {k: True for k, v in (ds.get("secureJsonData") or {}).items() if v}
        return view

    def get_datasource(self, uid: str) -> Answer:
        if uid not in self.datasources:
            return Answer(404, {"message": "Data source not found"})
        return Answer(200, self._datasource_view(self.datasources[uid]))

    def create_datasource(self, body: Any) -> Answer:
        if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
            return Answer(400, {"message": "bad request data"})
        if any(ds["name"] == body["name"] for ds in self.datasources.values()):
            return Answer(409, {"message": "data source with the same name already exists"})
        uid = body.get("uid") or f"ds{self.next_id}"
        if uid in self.datasources:
            return Answer(409, {"message": "data source with the same uid already exists"})
        ds = {**body, "id": self.new_id(), "uid": uid, "version": 1, "orgId": 1}
        self.datasources[uid] = ds
        view = self._datasource_view(ds)
        return Answer(
            200, {"datasource": view, "id": ds["id"], "message": "Datasource added", "name": ds["name"]}
        )

    def update_datasource(self, uid: str, body: Any) -> Answer:
        if uid not in self.datasources:
            return Answer(404, {"message": "Data source not found"})
        if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
            return Answer(400, {"message": "bad request data"})
        stored = self.datasources[uid]
        if body.get("version") is not None and int(body["version"]) < stored["version"]:
            return Answer(
                409,
                {
                    "message": "Datasource has already been updated by someone else. Please reload and try again"
                },
            )
        if any(
            other["name"] == body["name"] and other_uid != uid
            for other_uid, other in self.datasources.items()
        ):
            return Answer(409, {"message": "data source with the same name already exists"})
        ds = {**body, "id": stored["id"], "uid": uid, "version": stored["version"] + 1, "orgId": 1}
        self.datasources[uid] = ds
        view = self._datasource_view(ds)
        return Answer(
            200, {"datasource": view, "id": ds["id"], "message": "Datasource updated", "name": ds["name"]}
        )

    # -- folders -------------------------------------------------------------------

    def get_folder(self, uid: str) -> Answer:
        if uid not in self.folders:
            return Answer(404, {"message": "folder not found", "status": "not-found"})
        return Answer(200, dict(self.folders[uid]))

    def create_folder(self, body: Any) -> Answer:
        if not isinstance(body, dict) or not body.get("title"):
            return Answer(400, {"message": "folder title cannot be empty"})
        if any(f["title"] == body["title"] for f in self.folders.values()):
            return Answer(409, {"message": "a folder with the same name already exists"})
        uid = body.get("uid") or f"f{self.next_id}"
        if uid in self.folders:
            return Answer(409, {"message": "a folder with the same uid already exists"})
        folder = {
            "id": self.new_id(),
            "uid": uid,
            "title": body["title"],
            "version": 1,
            "url": f"/dashboards/f/{uid}/",
        }
        self.folders[uid] = folder
        return Answer(200, dict(folder))

    def update_folder(self, uid: str, body: Any) -> Answer:
        if uid not in self.folders:
            return Answer(404, {"message": "folder not found", "status": "not-found"})
        folder = self.folders[uid]
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            return Answer(
                412, {"message": "the folder has been changed by someone else", "status": "version-mismatch"}
            )
        folder.update(title=body.get("title", folder["title"]), version=folder["version"] + 1)
        return Answer(200, dict(folder))

    # -- dashboards ----------------------------------------------------------------

    def get_dashboard(self, uid: str) -> Answer:
        if uid not in self.dashboards:
            return Answer(404, {"message": "Dashboard not found"})
        stored = self.dashboards[uid]
        meta = {
            "folderUid": stored["folderUid"],
            "slug": stored["slug"],
            "url": f"/d/{uid}/{stored['slug']}",
            "version": stored["dashboard"]["version"],
            "canSave": True,
        }
        return Answer(200, {"dashboard": json.loads(json.dumps(stored["dashboard"])), "meta": meta})

    def save_dashboard(self, body: Any) -> Answer:
        dashboard = body.get("dashboard") if isinstance(body, dict) else None
        if not isinstance(dashboard, dict) or not dashboard.get("title"):
            return Answer(400, {"message": "Dashboard title cannot be empty", "status": "empty-name"})
        folder_uid = body.get("folderUid") or ""
        if folder_uid and folder_uid not in self.folders:
            return Answer(400, {"message": "folder not found", "status": "folder-not-found"})
        uid = dashboard.get("uid") or f"d{self.next_id}"
        overwrite = bool(body.get("overwrite"))
        if uid in self.saved_elsewhere and uid in self.dashboards:
            self.saved_elsewhere.discard(uid)
            self.dashboards[uid]["dashboard"]["version"] += 1
        existing = self.dashboards.get(uid)
        same_title = [
            u
            for u, d in self.dashboards.items()
            if u != uid and d["folderUid"] == folder_uid and d["dashboard"]["title"] == dashboard["title"]
        ]
        if same_title and not overwrite:
            return Answer(
                412,
                {
                    "message": "A dashboard with the same name in the folder already exists",
                    "status": "name-exists",
                },
            )
        if (
            existing
            and not overwrite
            and int(dashboard.get("version") or 0) != existing["dashboard"]["version"]
        ):
            return Answer(
                412,
                {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"},
            )
        for other in same_title:  # overwrite replaces the same-named dashboard
            del self.dashboards[other]
        version = existing["dashboard"]["version"] + 1 if existing else 1
        dashboard_id = existing["dashboard"]["id"] if existing else self.new_id()
        slug = re.sub(r"[^a-z0-9]+", "-", dashboard["title"].lower()).strip("-")
        stored = {**json.loads(json.dumps(dashboard)), "id": dashboard_id, "uid": uid, "version": version}
        self.dashboards[uid] = {"dashboard": stored, "folderUid": folder_uid, "slug": slug}
        return Answer(
            200,
            {
                "id": dashboard_id,
                "slug": slug,
                "status": "success",
                "uid": uid,
                "url": f"/d/{uid}/{slug}",
                "version": version,
            },
        )

    # -- annotations ---------------------------------------------------------------

    def add_annotation(self, body: Any) -> Answer:
        if not isinstance(body, dict) or not body.get("text"):
            return Answer(400, {"message": "Failed to save annotation: text is required"})
        annotation = {**body, "id": self.new_id()}
        self.annotations.append(annotation)
        return Answer(200, {"id": annotation["id"], "message": "Annotation added"})


# (method, path pattern, role needed, permission named in a 403, handler name)
_ROUTES: tuple[tuple[str, re.Pattern[str], str, str, str], ...] = (
    ("GET", re.compile(r"/api/datasources/uid/([^/]+)"), "Admin", "datasources:read", "get_datasource"),
    ("POST", re.compile(r"/api/datasources"), "Admin", "datasources:create", "create_datasource"),
    ("PUT", re.compile(r"/api/datasources/uid/([^/]+)"), "Admin", "datasources:write", "update_datasource"),
    ("GET", re.compile(r"/api/folders/([^/]+)"), "Viewer", "folders:read", "get_folder"),
    ("POST", re.compile(r"/api/folders"), "Editor", "folders:create", "create_folder"),
    ("PUT", re.compile(r"/api/folders/([^/]+)"), "Editor", "folders:write", "update_folder"),
    ("GET", re.compile(r"/api/dashboards/uid/([^/]+)"), "Viewer", "dashboards:read", "get_dashboard"),
    ("POST", re.compile(r"/api/dashboards/db"), "Editor", "dashboards:write", "save_dashboard"),
    ("POST", re.compile(r"/api/annotations"), "Editor", "annotations:create", "add_annotation"),
)


class FakeGrafana:
    """Grafana's HTTP API for spike's operations, on 127.0.0.1 and a free port."""

    def __init__(self, keys: dict[str, str]) -> None:
        for role in keys.values():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; valid values: {', '.join(ROLES)}")
        self.state = FakeGrafanaState(keys=dict(keys))
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-grafana",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def statuses(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, in order."""
        return [(r.method, r.path, r.status) for r in self.state.requests]

    def answer(self, method: str, path: str, authorization: str | None, body: Any) -> Answer:
        """Route one request, as Grafana would: authenticate, authorise, then act."""
        with self._lock:
            answer = self._route(method, path, authorization, body)
            self.state.requests.append(Recorded(method, path, answer.status, body))
            return answer

    def _route(self, method: str, path: str, authorization: str | None, body: Any) -> Answer:
        for route_method, pattern, role, permission, handler in _ROUTES:
            match = pattern.fullmatch(path)
            if route_method != method or match is None:
                continue
            denied = self._authorised(authorization, role, permission)
            if denied is not None:
                return denied
            args: list[Any] = [*match.groups(), body] if method != "GET" else list(match.groups())
            answer: Answer = getattr(self.state, handler)(*args)
            return answer
        return Answer(404, {"message": "Not found"})

    def _authorised(self, authorization: str | None, needed: str, permission: str) -> Answer | None:
        """None when the key may do this; otherwise Grafana's 401 or 403."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            return Answer(401, {"message": "Unauthorized"})
        role = self.state.keys.get(token.strip())
        if role is None:
            return Answer(401, {"message": "invalid API key"})
        if ROLES.index(role) < ROLES.index(needed):
            return _forbidden(permission)
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without this, Nagle plus the
            # client's delayed ACK add 40 ms to every request.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    answer = Answer(400, {"message": "bad request data"})
                else:
                    path = self.path.split("?", 1)[0]
                    answer = fake.answer(self.command, path, self.headers.get("Authorization"), body)
                data = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the recorded requests are the log

        return Handler
