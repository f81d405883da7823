"""Starting, stopping and steering the lab from outside its daemon (the CLI and the tests use this).

info = lab_up(LabSettings(state_dir=Path("/tmp/lab"), port=5000))   # daemon started, lab ready
client = LabClient(Path("/tmp/lab"))
client.hosts()                       # [LabHost(...), ...]
client.lose_hosts("us-east-1")       # that region's hosts vanish; moto still lists them
client.fail_apply("eu-west-2")       # RunInstances there fails until client.clear_fail_apply(...)
lab_down(Path("/tmp/lab"))           # everything gone; safe twice and after a killed daemon

with Lab(LabSettings(...)) as lab:   # for tests: waits for the machine's lab lock, then up/down
    lab.endpoint, lab.env, lab.client
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import loadorch
from loadorch.errors import InfrastructureError, PreflightError
from loadorch.lab import network
from loadorch.lab.state import MACHINE_LOCK, TURN_LOCK, LabPaths, LabSettings, aws_env, default_state_dir
from loadorch.process import on_parent_death_preexec


@dataclass(frozen=True)
class LabRegion:
    name: str
    number: int
    edge: str  # the region's edge address: the target is reached there, through its latency
    latency_ms: float | None = None
    jitter_ms: float | None = None
    cut: bool = False
    fail_apply: str | None = None  # the error RunInstances gets there, if set


@dataclass(frozen=True)
class LabHost:
    """One lab host as the daemon reports it; `state`: booting, running, failed, terminating,
    terminated, stopped or lost."""

    instance_id: str
    region: str
    address: str
    netns: str
    state: str
    host_keys_on_console: bool
    sshd: bool
    user_data_exit: int | None
    bootstrap_done: bool
    ttl_at: float | None
    launched_at: float
    keys_after_s: float | None
    ended_at: float | None
    shutdown_behaviour: str
    note: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabHost:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True)
class LabInfo:
    """A running lab: where moto answers and what to tell spike."""

    endpoint: str
    pid: int
    state_dir: Path
    regions: tuple[LabRegion, ...]
    target_host: str
    target_port: int
    ssh_user: str
    operator_cidr: str
    latency_proxy: bool
    rootfs: str  # overlay (a copy-on-write root per host) or bind (the fallback)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabInfo:
        return cls(
            endpoint=str(data["endpoint"]),
            pid=int(data["pid"]),
            state_dir=Path(data["state_dir"]),
            regions=tuple(_region(r) for r in data.get("regions", [])),
            target_host=str(data["target_host"]),
            target_port=int(data["target_port"]),
            ssh_user=str(data["ssh_user"]),
            operator_cidr=str(data["operator_cidr"]),
            latency_proxy=bool(data.get("latency_proxy")),
            rootfs=str(data.get("rootfs", "overlay")),
        )

    @property
    def target_url(self) -> str:
        return f"http://{self.target_host}:{self.target_port}"

    @property
    def env(self) -> dict[str, str]:
        """Fake credentials and the endpoint, for boto3, Terraform and `spike run --provider aws`."""
        return aws_env(self.endpoint, self.regions[0].name if self.regions else "us-east-1")


def _region(data: dict[str, Any]) -> LabRegion:
    return LabRegion(**{name: data.get(name) for name in LabRegion.__dataclass_fields__})  # type: ignore[arg-type]


class LabClient:
    """The daemon's control routes, over HTTP on its moto port."""

    def __init__(
        self, state_dir: Path | None = None, *, endpoint: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.paths = LabPaths(Path(state_dir) if state_dir is not None else default_state_dir())
        self._endpoint = endpoint
        self.timeout_s = timeout_s

    @property
    def endpoint(self) -> str:
        if self._endpoint is not None:
            return self._endpoint
        info = self.paths.read_info()
        if info is None:
            raise PreflightError(
                f"no lab is running with state dir {self.paths.root}",
                fix="start one with `spike lab up` (or pass the --state-dir it was started with)",
            )
        return str(info["endpoint"])

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.endpoint}/spike-lab/{route}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise InfrastructureError(f"the lab refused {method} {route}: {message}", where=url) from None
        except OSError as exc:
            raise InfrastructureError(
                f"the lab does not answer at {url}: {exc}",
                where=str(self.paths.root),
                fix="`spike lab status` says whether it runs; `spike lab up` starts it",
            ) from None

    def status(self) -> dict[str, Any]:
        return dict(self._call("GET", "status"))

    def info(self) -> LabInfo:
        answer = self.status()
        return LabInfo.from_json({**answer["lab"], "regions": answer["regions"]})

    def hosts_json(self) -> list[dict[str, Any]]:
        """The hosts as the daemon reports them (`spike lab hosts`)."""
        return list(self._call("GET", "hosts"))

    def hosts(self) -> list[LabHost]:
        return [LabHost.from_json(h) for h in self.hosts_json()]

    def host(self, instance_id: str) -> LabHost | None:
        return next((h for h in self.hosts() if h.instance_id == instance_id), None)

    def lose_hosts(self, region: str) -> list[str]:
        """The region's live hosts vanish abruptly (SIGKILL, netns deleted); moto still lists them."""
        return list(self._call("POST", "lose-hosts", {"region": region})["lost"])

    def fail_apply(self, region: str, message: str | None = None, code: str | None = None) -> dict[str, Any]:
        """RunInstances in `region` fails with an EC2 error (default InsufficientInstanceCapacity)."""
        return dict(self._call("POST", "fail-apply", {"region": region, "message": message, "code": code}))

    def clear_fail_apply(self, region: str) -> None:
        self._call("POST", "clear-fail-apply", {"region": region})

    def set_latency(self, region: str, latency_ms: float, jitter_ms: float = 0.0) -> None:
        self._call("POST", "latency", {"region": region, "latency_ms": latency_ms, "jitter_ms": jitter_ms})

    def cut(self, region: str) -> None:
        """The region's path to the target is cut (connections refused/dropped by the proxy)."""
        self._call("POST", "cut", {"region": region})

    def restore(self, region: str) -> None:
        self._call("POST", "restore", {"region": region})

    def shutdown(self) -> None:
        self._call("POST", "shutdown", {})

    def wait_for_hosts(
        self,
        instance_ids: list[str],
        *,
        state: str = "running",
        bootstrap: bool = False,
        timeout_s: float = 120.0,
    ) -> list[LabHost]:
        """Poll until every instance's host is in `state` (and bootstrapped, if asked)."""
        deadline = time.monotonic() + timeout_s
        while True:
            hosts = {h.instance_id: h for h in self.hosts()}
            ready = [
                hosts[i]
                for i in instance_ids
                if i in hosts and hosts[i].state == state and (not bootstrap or hosts[i].bootstrap_done)
            ]
            if len(ready) == len(instance_ids):
                return ready
            if time.monotonic() > deadline:
                seen = {i: (hosts[i].state, hosts[i].note) if i in hosts else "unknown" for i in instance_ids}
                raise InfrastructureError(f"lab hosts not {state} within {timeout_s:.0f} s: {seen}")
            time.sleep(0.2)


def _machine_lock_free() -> bool:
    """True when no lab daemon holds the machine's lab lock (checked without keeping it)."""
    try:
        fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases a lock taken here
    return True


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PreflightError(
            "the lab needs root: it creates network namespaces, a bridge and mounts",
            fix="run `spike lab` as root (e.g. `sudo .venv/bin/spike lab up`)",
        )


def lab_up(settings: LabSettings, *, timeout_s: float = 60.0, tie_to_caller: bool = False) -> LabInfo:
    """Start the lab daemon detached and wait until moto answers and the network is up.

    `tie_to_caller` (tests): the daemon gets SIGTERM, and so stops and sweeps everything, when
    this process ends, even by SIGKILL (PR_SET_PDEATHSIG; only from the main thread, since the
    signal fires when the starting *thread* ends). `spike lab up` leaves it running on its own.
    """
    _require_root()
    from loadorch.lab.daemon import check_prerequisites

    check_prerequisites()  # here too: say what is missing before a detached daemon would
    paths = LabPaths(settings.state_dir)
    running = paths.daemon_pid()
    if running is not None and paths.read_info() is not None:
        return LabClient(settings.state_dir).info()
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.startup_error.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(loadorch.__file__).resolve().parents[1])}
    tied = tie_to_caller and threading.current_thread() is threading.main_thread()
    with paths.log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "loadorch.lab.daemon", *settings.daemon_argv()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # detached: it outlives this command
            preexec_fn=on_parent_death_preexec(signal.SIGTERM) if tied else None,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            reason = paths.startup_error.read_text().strip() if paths.startup_error.exists() else ""
            raise PreflightError(
                f"the lab did not start (exit {code}): {reason or 'see ' + str(paths.log)}",
                where=str(paths.log),
            )
        info = paths.read_info()
        if info is not None and info.get("pid") == process.pid:
            with contextlib.suppress(InfrastructureError):
                return LabClient(settings.state_dir, timeout_s=5).info()
        if time.monotonic() > deadline:
            process.terminate()
            raise InfrastructureError(
                f"the lab did not become ready within {timeout_s:.0f} s", where=str(paths.log)
            )
        time.sleep(0.1)


def lab_down(state_dir: Path | None = None, *, timeout_s: float = 60.0) -> list[str]:
    """Stop the daemon (asked first, then SIGTERM, then SIGKILL), sweep every spkl* object, remove
    the state. Safe to run twice or after the daemon was killed. Returns what it did."""
    _require_root()
    paths = LabPaths(Path(state_dir) if state_dir is not None else default_state_dir())
    done: list[str] = []
    pid = paths.daemon_pid()
    if pid is not None:
        with contextlib.suppress(InfrastructureError):
            LabClient(paths.root, timeout_s=5).shutdown()
        if not _wait_gone(pid, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 15):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
                done.append(f"the lab daemon (pid {pid}) did not stop; killed")
        done.append(f"stopped the lab daemon (pid {pid})")
    done += _stop_leftover_toxiproxy(paths)
    if not _machine_lock_free():
        raise PreflightError(
            f"another lab is running on this machine ({MACHINE_LOCK.read_text().strip()}); "
            f"nothing of it was touched",
            where=str(paths.root),
            fix="give `spike lab down` that lab's --state-dir",
        )
    done += [f"removed leftover {item}" for item in network.sweep()]
    if paths.root.exists():
        shutil.rmtree(paths.root, ignore_errors=True)
        done.append(f"removed {paths.root}")
    return done or ["no lab was running and nothing was left"]


def _stop_leftover_toxiproxy(paths: LabPaths) -> list[str]:
    """The latency proxy dies with its daemon (PDEATHSIG); should it not have, it goes here."""
    try:
        pid = int((paths.latency / "toxiproxy.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return []
    if b"toxiproxy" not in cmdline:
        return []
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5)
    return [f"stopped a leftover toxiproxy-server (pid {pid})"]


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child (lab_up in this process): reap it
        time.sleep(0.1)
    return False


def lab_status(state_dir: Path | None = None) -> dict[str, Any]:
    """{"running": bool, ...the daemon's status, or "leftovers": spkl* objects when it is not running}."""
    paths = LabPaths(Path(state_dir) if state_dir is not None else default_state_dir())
    if paths.daemon_pid() is not None and paths.read_info() is not None:
        return {"running": True, **LabClient(paths.root, timeout_s=10).status()}
    leftovers = [f"netns {n}" for n in network.lab_netns()] + [f"link {n}" for n in network.lab_links()]
    return {"running": False, "state_dir": str(paths.root), "leftovers": leftovers}


class MachineTurn:
    """One lab user at a time on this machine (a test module, a script), from before `lab up` to
    after `lab down`: an exclusive lock on /run/spike-lab-turn.lock, waited for (bounded).

    The daemon's own lock only covers its life; a user whose daemon is killed on purpose (a
    fault test) still holds its turn until it has swept, so nobody else's lab starts in between.
    """

    def __init__(self, wait_s: float = 3600.0) -> None:
        self.wait_s = wait_s
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(TURN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise PreflightError(
                        f"another lab user kept this machine's lab for {self.wait_s:.0f} s",
                        where=str(TURN_LOCK),
                        fix="wait for it, or stop its lab with `spike lab down --state-dir DIR`",
                    ) from None
                time.sleep(0.5)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Lab:
    """A lab for one test module or session: waits (bounded) for its turn on the machine (see
    `MachineTurn`), starts one, and always takes it down again."""

    def __init__(
        self,
        settings: LabSettings,
        *,
        wait_for_machine_s: float = 3600.0,
        timeout_s: float = 60.0,
        tie_to_caller: bool = True,
    ) -> None:
        self.settings = settings
        self.tie_to_caller = tie_to_caller
        self.wait_for_machine_s = wait_for_machine_s
        self.timeout_s = timeout_s
        self._info: LabInfo | None = None
        self.turn = MachineTurn(wait_for_machine_s)

    @property
    def info(self) -> LabInfo:
        if self._info is None:
            raise InfrastructureError("the lab is not up")
        return self._info

    @property
    def endpoint(self) -> str:
        return self.info.endpoint

    @property
    def env(self) -> dict[str, str]:
        return self.info.env

    @property
    def client(self) -> LabClient:
        return LabClient(self.settings.state_dir)

    def start(self) -> Self:
        self.turn.acquire()
        deadline = time.monotonic() + self.wait_for_machine_s
        while True:
            while not _machine_lock_free():
                if time.monotonic() > deadline:
                    raise PreflightError(
                        f"another lab kept this machine busy for {self.wait_for_machine_s:.0f} s",
                        where=str(MACHINE_LOCK),
                        fix="stop it with `spike lab down --state-dir DIR`",
                    )
                time.sleep(0.5)
            try:
                self._info = lab_up(self.settings, timeout_s=self.timeout_s, tie_to_caller=self.tie_to_caller)
                return self
            except PreflightError as exc:
                # another lab took the lock between our check and the daemon's: wait again
                if "already running" not in exc.message or time.monotonic() > deadline:
                    raise

    def stop(self) -> list[str]:
        self._info = None
        try:
            return lab_down(self.settings.state_dir, timeout_s=self.timeout_s)
        finally:
            self.turn.release()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
