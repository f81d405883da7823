"""The local metrics stack: Debian's `influxd` (1.6.7) run by spike, on loopback only.

`spike stack up` writes its own config under `state_dir()/stack/influxdb/`
(meta, data and wal directories live there too), starts `influxd` in the
background with a pid file and a log file, waits for /ping and creates the
`spike` database. Every listener binds 127.0.0.1; Graphite, UDP, collectd and
OpenTSDB inputs stay off. `down` stops it (SIGTERM, then SIGKILL); the data
directory stays, so the next `up` has the previous runs.

`LocalInflux` is the same server as a throwaway context manager for tests: free
ports, a temporary directory, and a process that dies with its parent.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import psutil
import urllib3

from loadorch.errors import BadInputError, InfrastructureError, PreflightError
from loadorch.paths import state_dir
from loadorch.process import Command, spawn
from loadorch.process import die_with_parent as die_with_parent  # throwaway test servers (sshd) use it

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8086
DEFAULT_RPC_PORT = 8088
DEFAULT_DATABASE = "spike"
INSTALL_HINT = (
    "install it: apt-get install -y influxdb (as root); `make demo` and `make test` install it for you"
)


# ---------------------------------------------------------------- small shared pieces


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound (also false when a wildcard listener holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Go servers set SO_REUSEADDR too, so TIME_WAIT leftovers do not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def busy_port_error(port: int, what: str, option: str) -> PreflightError:
    return PreflightError(
        f"port {port} on {LOOPBACK} ({what}) is already in use",
        fix=(
            f"stop whatever listens there (`ss -ltnp 'sport = :{port}'` names it; Debian's own service: "
            f"`service influxdb stop`) or pick another port: `spike stack up {option} {port + 1}`"
        ),
    )


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def http_get(url: str, timeout_s: float = 2.0) -> Any | None:
    """GET url; the response, or None when nothing answers."""
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
    try:
        return http.request("GET", url)
    except urllib3.exceptions.HTTPError:
        return None
    finally:
        http.clear()


def stop_process(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM, wait up to grace_s, then SIGKILL; reaps the process when it is our child."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        return


def wait_until_ready(
    process: subprocess.Popen[bytes], url: str, log_file: Path, name: str, timeout_s: float
) -> Any:
    """Poll url until it answers 2xx/401; raise with the log's tail if the process dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            tail = log_tail(log_file)
            if "address already in use" in tail:
                raise PreflightError(
                    f"{name} could not bind its port: address already in use",
                    where=str(log_file),
                    fix="another server took the port; stop it or choose other ports",
                )
            raise InfrastructureError(
                f"{name} exited with code {code} during start-up; last log lines:\n{tail}",
                where=str(log_file),
            )
        resp = http_get(url, timeout_s=1.0)
        if resp is not None and (resp.status < 300 or resp.status == 401):
            return resp
        if time.monotonic() > deadline:
            stop_process(process.pid)
            raise InfrastructureError(
                f"{name} did not answer {url} within {timeout_s:.0f} s; last log lines:\n{log_tail(log_file)}",
                where=str(log_file),
            )
        time.sleep(0.1)


# ---------------------------------------------------------------- influxd


def influxd_binary() -> str:
    found = shutil.which("influxd")
    if found is None:
        raise PreflightError("influxd (InfluxDB 1.x) is not installed", fix=INSTALL_HINT)
    return found


def _toml_string(value: str) -> str:
    # JSON string escaping is valid TOML basic-string escaping.
    return json.dumps(value)


def influxd_config(home: Path, port: int, rpc_port: int, *, auth_enabled: bool = False) -> str:
    """An influxd 1.x config that keeps everything under `home` and every listener on loopback."""
    return f"""\
# Written by spike; rewritten on every start, so edit spike's settings instead.
# Upstream 1.x calls the usage-report switch reporting-disabled; Debian's build calls it
# reporting-enabled. Unknown keys are ignored, so both are set.
reporting-disabled = true
reporting-enabled = false
bind-address = {_toml_string(f"{LOOPBACK}:{rpc_port}")}

[meta]
  dir = {_toml_string(str(home / "meta"))}

[data]
  dir = {_toml_string(str(home / "data"))}
  wal-dir = {_toml_string(str(home / "wal"))}
  query-log-enabled = false

[monitor]
  # No _internal database: the only writer here is spike.
  store-enabled = false

[http]
  enabled = true
  bind-address = {_toml_string(f"{LOOPBACK}:{port}")}
  auth-enabled = {"true" if auth_enabled else "false"}
  log-enabled = true
  suppress-write-log = true
  pprof-enabled = false
  unix-socket-enabled = false

[ifql]
  enabled = false

[logging]
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""


def influx_query(
    url: str,
    query: str,
    *,
    db: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """POST an InfluxQL statement to /query (epoch ms); the decoded JSON, or InfrastructureError."""
    params = {"q": query, "epoch": "ms"}
    if db:
        params["db"] = db
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if username is not None:
        headers.update(urllib3.make_headers(basic_auth=f"{username}:{password or ''}"))
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
    try:
        resp = http.request("POST", f"{url}/query", body=urlencode(params), headers=headers)
    except urllib3.exceptions.HTTPError as exc:
        raise InfrastructureError(
            f"InfluxDB at {url} is unreachable for /query: {type(exc).__name__}"
        ) from None
    finally:
        http.clear()
    try:
        doc = json.loads(resp.data or b"{}")
    except ValueError:
        doc = {"error": resp.data.decode("utf-8", "replace")}
    if resp.status >= 300:
        raise InfrastructureError(
            f"InfluxDB at {url} refused {query!r} ({resp.status}: {doc.get('error', '')})"
        )
    for result in doc.get("results", []):
        if "error" in result:
            raise InfrastructureError(f"InfluxDB at {url} refused {query!r}: {result['error']}")
    return dict(doc)


def _start_influxd(config_file: Path, log_file: Path, *, tied_to_parent: bool) -> subprocess.Popen[bytes]:
    try:
        return spawn(
            Command((influxd_binary(), "run", "-config", str(config_file))),
            output=log_file,
            append=True,
            # Its own session: Ctrl-C in the terminal that ran `spike stack up` must not stop it.
            new_session=True,
            on_parent_death=signal.SIGKILL if tied_to_parent else None,
            what="influxd",
        )
    except PreflightError as exc:
        raise InfrastructureError(f"cannot start influxd: {exc.message}", fix=INSTALL_HINT) from exc


# ---------------------------------------------------------------- spike stack up|down|status


@dataclass(frozen=True)
class StackStatus:
    """What `spike stack` reports."""

    running: bool
    note: str
    url: str | None
    version: str | None
    pid: int | None
    home: Path
    data_dir: Path
    config_file: Path
    log_file: Path

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) rows for the CLI."""
        rows = [("state", "running" if self.running else "stopped")]
        if self.url:
            rows.append(("url", self.url))
        if self.version:
            rows.append(("version", f"InfluxDB {self.version}"))
        if self.pid:
            rows.append(("pid", str(self.pid)))
        rows += [("data", str(self.data_dir)), ("config", str(self.config_file)), ("log", str(self.log_file))]
        return rows


@dataclass(frozen=True)
class _StackPaths:
    home: Path

    @classmethod
    def under(cls, root: Path | None) -> _StackPaths:
        return cls((root if root is not None else state_dir() / "stack") / "influxdb")

    @property
    def config(self) -> Path:
        return self.home / "influxdb.conf"

    @property
    def pid(self) -> Path:
        return self.home / "influxd.pid"

    @property
    def state(self) -> Path:
        return self.home / "stack.json"

    @property
    def log(self) -> Path:
        return self.home / "influxd.log"

    @property
    def data(self) -> Path:
        return self.home / "data"


def _our_influxd(paths: _StackPaths) -> int | None:
    """The pid of the influxd this stack started, if it still runs (guards against pid reuse)."""
    try:
        pid = int(paths.pid.read_text().strip())
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, psutil.Error):
        return None
    if any(Path(arg).name == "influxd" for arg in cmdline[:1]) and str(paths.config) in cmdline:
        return pid
    return None


def _read_state(paths: _StackPaths) -> dict[str, Any]:
    try:
        return dict(json.loads(paths.state.read_text()))
    except (OSError, ValueError):
        return {}


def _status(paths: _StackPaths, note: str) -> StackStatus:
    pid = _our_influxd(paths)
    url = _read_state(paths).get("url")
    version = None
    if pid is not None and url:
        resp = http_get(f"{url}/ping")
        version = resp.headers.get("X-Influxdb-Version") if resp is not None else None
    return StackStatus(
        running=pid is not None,
        note=note,
        url=url if pid is not None else None,
        version=version,
        pid=pid,
        home=paths.home,
        data_dir=paths.data,
        config_file=paths.config,
        log_file=paths.log,
    )


def stack_status(root: Path | None = None) -> StackStatus:
    """Running or stopped, with url, version, pid and where the data lives."""
    paths = _StackPaths.under(root)
    pid = _our_influxd(paths)
    return _status(paths, "running" if pid is not None else "not running (`spike stack up` starts it)")


def stack_up(
    port: int = DEFAULT_PORT,
    rpc_port: int = DEFAULT_RPC_PORT,
    root: Path | None = None,
    *,
    database: str = DEFAULT_DATABASE,
    timeout_s: float = 30.0,
) -> StackStatus:
    """Start influxd on 127.0.0.1:port (idempotent) and create the database."""
    paths = _StackPaths.under(root)
    running = _our_influxd(paths)
    if running is not None:
        url = _read_state(paths).get("url", "?")
        note = f"already running on {url}"
        if _read_state(paths).get("port") not in (None, port):
            note += f" (not on port {port}: `spike stack down` first to move it)"
        return _status(paths, note)

    for number in (port, rpc_port):
        if not 0 < number < 65536:
            raise BadInputError(f"port {number} is not a TCP port", fix="use 1-65535, e.g. --port 8086")
    if port == rpc_port:
        raise BadInputError(
            f"the HTTP and RPC ports are both {port}", fix="give them different ports, e.g. 8086 and 8088"
        )
    influxd_binary()
    for number, what, option in ((port, "InfluxDB HTTP", "--port"), (rpc_port, "InfluxDB RPC", "--rpc-port")):
        if not port_is_free(number):
            raise busy_port_error(number, what, option)

    for sub in ("meta", "data", "wal"):
        (paths.home / sub).mkdir(parents=True, exist_ok=True)
    paths.config.write_text(influxd_config(paths.home, port, rpc_port), encoding="utf-8")
    paths.pid.unlink(missing_ok=True)
    url = f"http://{LOOPBACK}:{port}"

    process = _start_influxd(paths.config, paths.log, tied_to_parent=False)
    paths.pid.write_text(f"{process.pid}\n")
    paths.state.write_text(json.dumps({"url": url, "port": port, "rpc_port": rpc_port, "pid": process.pid}))
    try:
        wait_until_ready(process, f"{url}/ping", paths.log, "influxd", timeout_s)
        influx_query(url, f'CREATE DATABASE "{database}"')
    except BaseException:
        stop_process(process.pid)
        paths.pid.unlink(missing_ok=True)
        raise
    return _status(paths, f"started; database {database!r} is ready")


def stack_down(root: Path | None = None, *, grace_s: float = 10.0) -> StackStatus:
    """Stop the stack's influxd (SIGTERM, then SIGKILL) and remove its pid file; data stays."""
    paths = _StackPaths.under(root)
    pid = _our_influxd(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        return _status(paths, "was not running")
    stop_process(pid, grace_s)
    paths.pid.unlink(missing_ok=True)
    return _status(paths, f"stopped (pid {pid}); data kept in {paths.data}")


# ---------------------------------------------------------------- throwaway server for tests


class ThrowawayServer:
    """A server process a test starts and must stop: `with Server(...) as server:` stops it on any exit."""

    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalInflux(ThrowawayServer):
    """A throwaway influxd under `root` on loopback; port 0 picks free ports.

    with LocalInflux(tmp_path) as influx:
        influx.url  # http://127.0.0.1:PORT, database "spike" exists (unless auth_enabled)
    """

    def __init__(
        self,
        root: Path,
        port: int = 0,
        rpc_port: int = 0,
        *,
        auth_enabled: bool = False,
        database: str | None = DEFAULT_DATABASE,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.requested = (port, rpc_port)
        self.auth_enabled = auth_enabled
        self.database = database
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.rpc_port = 0
        self.version = ""
        self.log_file = self.root / "influxd.log"
        self.config_file = self.root / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> LocalInflux:
        influxd_binary()
        for sub in ("meta", "data", "wal"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # A free port can be taken between picking and binding; pick again a few times.
        attempts = 3 if 0 in self.requested else 1
        for attempt in range(attempts):
            self.port = self.requested[0] or free_port()
            self.rpc_port = self.requested[1] or free_port()
            if self.rpc_port == self.port:
                self.rpc_port = free_port()
            self.config_file.write_text(
                influxd_config(self.root, self.port, self.rpc_port, auth_enabled=self.auth_enabled)
            )
            self.process = _start_influxd(self.config_file, self.log_file, tied_to_parent=True)
            try:
                ping = wait_until_ready(
                    self.process, f"{self.url}/ping", self.log_file, "influxd", self.startup_timeout_s
                )
            except PreflightError:
                self.stop()
                if attempt == attempts - 1:
                    raise
                continue
            self.version = ping.headers.get("X-Influxdb-Version", "")
            break
        if self.database and not self.auth_enabled:
            self.query(f'CREATE DATABASE "{self.database}"')
        return self

    def query(
        self, query: str, *, db: str | None = None, username: str | None = None, password: str | None = None
    ) -> dict[str, Any]:
        return influx_query(self.url, query, db=db, username=username, password=password)
