"""The lab daemon: moto with hooks, the hosts, the network and the latency proxy, in one process.

    python -m loadorch.lab.daemon --state-dir DIR [--port 5000] [--regions a,b,c]
        [--latency a=5,b=40] [--target-port 8080] [--ssh-user ec2-user] [--no-latency]

`spike lab up` starts it detached and waits for lab.json. It runs as root (network namespaces,
mounts), holds /run/spike-lab.lock, serves moto and the control routes on 127.0.0.1:PORT, and on
SIGTERM/SIGINT or POST /spike-lab/shutdown terminates every host, stops the proxy, removes every
spkl* object and exits. If it is killed instead, `spike lab down` sweeps what it left.

Control routes (JSON in and out):
    GET  /spike-lab/status              regions, hosts, faults
    GET  /spike-lab/hosts               the hosts (see `Host.snapshot`)
    POST /spike-lab/lose-hosts          {"region"}: the region's hosts vanish (moto keeps them)
    POST /spike-lab/fail-apply          {"region", "message"?, "code"?}: RunInstances there fails
    POST /spike-lab/clear-fail-apply    {"region"}
    POST /spike-lab/latency             {"region", "latency_ms", "jitter_ms"?}
    POST /spike-lab/cut | /restore      {"region"}: the region's path to the target is cut / back
    POST /spike-lab/shutdown            the daemon stops (what `spike lab down` asks first)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loadorch.errors import BadInputError, PreflightError, SpikeError
from loadorch.lab import moto_hooks, network
from loadorch.lab.hosts import TARGET_HOST_NAME, Host, HostManager, overlay_of_root_error
from loadorch.lab.state import MACHINE_LOCK, LabPaths, LabSettings

REQUIRED_PROGRAMS = ("ip", "unshare", "mount", "useradd", "usermod", "ssh-keygen", "/usr/sbin/sshd", "bash")
DEFAULT_FAILURE_CODE = "InsufficientInstanceCapacity"
Json = dict[str, Any]


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} spike-lab: {message}", flush=True)


def check_prerequisites() -> None:
    """Root, the programs hosts need, network namespaces: each missing piece named with its fix."""
    if os.geteuid() != 0:
        raise PreflightError(
            "the lab needs root: it creates network namespaces, a bridge and mounts",
            fix="run `spike lab up` as root (e.g. `sudo .venv/bin/spike lab up`)",
        )
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("werkzeug") is None:
        raise PreflightError(
            "the lab runs moto's server, which is not installed in this Python",
            fix="pip install 'moto[server]>=5,<6' (spike's dev extra has it: `make python-deps`)",
        )
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None and not os.access(p, os.X_OK)]
    if missing:
        raise PreflightError(
            f"the lab needs {', '.join(missing)}",
            fix="apt-get install iproute2 util-linux passwd openssh-server openssh-client (`make deps` does)",
        )
    network.check_netns_support()


def load_latency_module() -> Any:
    try:
        from loadorch.lab import latency  # type: ignore[attr-defined, unused-ignore]
    except ImportError as exc:
        raise PreflightError(
            f"the latency proxy is not available ({exc})",
            fix="start the lab with --no-latency, or install loadorch/lab/latency.py and toxiproxy (`make toxiproxy`)",
        ) from None
    return latency


class LabDaemon:
    """Everything the lab runs; see the module docstring."""

    def __init__(self, settings: LabSettings) -> None:
        self.settings = settings
        self.paths = LabPaths(settings.state_dir)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.fail_apply: dict[str, tuple[str, str]] = {}
        self.region_latency: dict[str, dict[str, Any]] = {}
        self.proxy: Any = None
        self.latency_module: Any = None
        self.server: Any = None
        self.manager: HostManager | None = None
        self._lock_fd: int | None = None

    # -- start and stop ------------------------------------------------------------------------

    def acquire_machine_lock(self) -> None:
        fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = Path(MACHINE_LOCK).read_text().strip() or "another process"
            os.close(fd)
            raise PreflightError(
                f"a lab is already running on this machine ({owner})",
                where=str(MACHINE_LOCK),
                fix="stop it with `spike lab down --state-dir DIR` (its state dir), then start again",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, state dir {self.settings.state_dir}\n".encode())
        self._lock_fd = fd

    def start(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.startup_error.unlink(missing_ok=True)
        self.paths.lab_json.unlink(missing_ok=True)
        self.paths.pid_file.write_text(f"{os.getpid()}\n")
        check_prerequisites()
        self.acquire_machine_lock()
        # With the lock held no other lab runs: any spkl* object is a leftover of a dead one.
        for removed in network.sweep():
            log(f"removed a leftover of an earlier lab: {removed}")
        shutil.rmtree(self.paths.hosts, ignore_errors=True)
        network.check_range_free()
        network.bridge_up()
        rootfs = self.choose_rootfs()
        if self.settings.latency:
            self.latency_module = load_latency_module()
            self.proxy = self.latency_module.LatencyProxy(self.paths.latency)
            self.proxy.start()
        self.manager = HostManager(
            self.paths.root,
            ssh_user=self.settings.ssh_user,
            regions=self.settings.regions,
            on_poweroff=self.host_powered_off,
            on_region_added=self.region_added,
            rootfs=rootfs,
        )
        moto_hooks.install(self)
        self.server = self.make_server()
        threading.Thread(target=self.server.serve_forever, name="moto", daemon=True).start()
        self.paths.write_info(self.info())
        log(f"ready: moto on {self.endpoint}, regions {', '.join(self.manager.regions)}")

    def choose_rootfs(self) -> str:
        """overlay (a copy-on-write root per host) where this kernel can, else the bind fallback."""
        wanted = self.settings.rootfs
        if wanted == "bind":
            log("hosts get bound directories over this machine's (--rootfs bind), not an overlay")
            return "bind"
        error = overlay_of_root_error(self.paths.root / "overlay-probe")
        if error is None:
            return "overlay"
        if wanted == "overlay":
            raise PreflightError(
                f"this kernel cannot mount an overlay of /: {error}",
                fix="start the lab with --rootfs auto (or bind) to use the bind-mount fallback",
            )
        log(
            f"WARNING: this kernel cannot mount an overlay of / ({error}): hosts get their own /etc, "
            "/home, /opt, /root and /var/log bound over this machine's instead; writes elsewhere reach this machine"
        )
        return "bind"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def make_server(self) -> Any:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: Json, start_response: Callable[..., Any]) -> Iterable[bytes]:
            if str(environ.get("PATH_INFO", "")).startswith("/spike-lab/"):
                return self.control(environ, start_response)
            return moto_app(environ, start_response)  # type: ignore[no-any-return]

        try:
            return make_server(
                "127.0.0.1", self.settings.port, app, threaded=True, request_handler=MotoRequestHandler
            )
        except OSError as exc:
            raise PreflightError(
                f"cannot listen on 127.0.0.1:{self.settings.port}: {exc.strerror}",
                fix="choose another port with --port, or stop what uses it",
            ) from None

    def stop(self) -> None:
        """Every host terminated, the proxy and moto stopped, every spkl* object removed."""
        self.stopping.set()
        if self._lock_fd is None:
            return  # never started: what exists on this machine belongs to another lab, if any
        log("stopping: terminating every host")
        if self.manager is not None:
            self.manager.shutdown_all()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
        if self.server is not None:
            threading.Thread(target=self.server.shutdown, daemon=True).start()
        for removed in network.sweep():
            log(f"removed {removed}")
        self.paths.lab_json.unlink(missing_ok=True)
        shutil.rmtree(self.paths.hosts, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = None
        log("stopped")

    def info(self) -> Json:
        assert self.manager is not None
        return {
            "pid": os.getpid(),
            "endpoint": self.endpoint,
            "port": self.settings.port,
            "state_dir": str(self.settings.state_dir),
            "regions": self.regions(),
            "target_port": self.settings.target_port,
            "target_host": TARGET_HOST_NAME,
            "ssh_user": self.settings.ssh_user,
            "operator_cidr": network.OPERATOR_CIDR,
            "latency_proxy": self.proxy is not None,
            "rootfs": self.manager.rootfs,
            "started_at": time.time(),
        }

    def regions(self) -> list[Json]:
        assert self.manager is not None
        with self.manager.lock:
            numbers = dict(self.manager.regions)
        with self.lock:
            return [
                {
                    "name": name,
                    "number": number,
                    "edge": network.edge_address(number),
                    **self.region_latency.get(name, {}),
                    "fail_apply": self.fail_apply.get(name, (None, None))[1],
                }
                for name, number in numbers.items()
            ]

    # -- hooks (called by moto and the hosts) --------------------------------------------------

    def region_added(self, region: str, number: int) -> None:
        edge = network.add_edge(number)
        if self.proxy is None:
            return
        defaults = getattr(self.latency_module, "DEFAULT_LATENCY_MS", {})
        latency_ms = float(self.settings.latency_ms.get(region, defaults.get(region, 0.0)))
        jitter_ms = float(self.settings.jitter_ms.get(region, 0.0))
        port = self.settings.target_port
        self.proxy.add_region(region, (edge, port), ("127.0.0.1", port), latency_ms, jitter_ms)
        with self.lock:
            self.region_latency[region] = {"latency_ms": latency_ms, "jitter_ms": jitter_ms, "cut": False}
        log(
            f"region {region}: edge {edge}, {latency_ms:g} ms (± {jitter_ms:g}) added round trip to the target"
        )

    def before_run_instances(self, region: str, count: int) -> None:
        if self.stopping.is_set():
            raise moto_hooks.ec2_error("Unavailable", "the spike lab is shutting down")
        with self.lock:
            failure = self.fail_apply.get(region)
        if failure is not None:
            log(f"RunInstances in {region} refused (fail-apply): {failure[0]}")
            raise moto_hooks.ec2_error(*failure)

    def instance_created(self, backend: Any, instance: Any) -> str:
        assert self.manager is not None
        host = self.manager.create(
            instance.id,
            backend.region_name,
            backend.account_id,
            authorized_keys=moto_hooks.instance_public_keys(backend, instance),
            user_data=moto_hooks.instance_user_data(instance),
            shutdown_behaviour=str(getattr(instance, "instance_initiated_shutdown_behavior", "stop")),
        )
        log(f"{instance.id} in {backend.region_name}: host at {host.address}, booting")
        return host.address

    def instances_terminated(self, instance_ids: list[str]) -> None:
        assert self.manager is not None
        for instance_id in instance_ids:
            log(f"{instance_id}: terminated, removing its host")
            self.manager.terminate(instance_id)

    def console_output(self, instance_id: str) -> str:
        assert self.manager is not None
        host = self.manager.get(instance_id)
        if host is None or (host.keys_at is None and not host.guest_status().get("keys_printed")):
            return ""  # as on EC2: nothing until the instance has booted
        return self.manager.console(instance_id)

    def host_powered_off(self, host: Host) -> None:
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[host.account_id][host.region]
        log(f"{host.instance_id}: powered itself off; shutdown behaviour {host.shutdown_behaviour}")
        if host.shutdown_behaviour == "terminate":
            backend.terminate_instances([host.instance_id])
        else:
            backend.stop_instances([host.instance_id])

    # -- control routes ------------------------------------------------------------------------

    def control(self, environ: Json, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))[len("/spike-lab/") :].strip("/")
        method = str(environ.get("REQUEST_METHOD", "GET"))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
            code, answer = 200, self.route(method, path, body)
        except SpikeError as exc:
            code, answer = (400 if isinstance(exc, BadInputError) else 500), {"error": exc.render()}
        except (ValueError, KeyError, TypeError) as exc:
            code, answer = 400, {"error": f"bad request: {exc}"}
        except Exception as exc:
            log(f"control {method} {path} failed: {traceback.format_exc()}")
            code, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
        data = (json.dumps(answer, sort_keys=True) + "\n").encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(code, "")
        start_response(
            f"{code} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def _region_of(self, body: Json) -> str:
        assert self.manager is not None
        region = str(body.get("region", ""))
        with self.manager.lock:
            known = list(self.manager.regions)
        if region not in known:
            raise BadInputError(f"the lab has no region {region!r}", fix=f"use one of: {', '.join(known)}")
        return region

    def route(self, method: str, path: str, body: Json) -> Any:
        assert self.manager is not None
        if method == "GET" and path == "status":
            with self.lock:
                faults = {region: {"code": c, "message": m} for region, (c, m) in self.fail_apply.items()}
            return {
                "lab": self.info(),
                "regions": self.regions(),
                "hosts": self.manager.snapshots(),
                "fail_apply": faults,
            }
        if method == "GET" and path == "hosts":
            return self.manager.snapshots()
        if method != "POST":
            raise BadInputError(f"no route {method} /spike-lab/{path}")
        if path == "shutdown":
            threading.Thread(target=self.stopping.set, daemon=True).start()
            return {"stopping": True}
        region = self._region_of(body)
        if path == "lose-hosts":
            lost = self.manager.lose_region(region)
            log(f"lose-hosts {region}: {', '.join(lost) or 'no live hosts'}")
            return {"lost": lost}
        if path == "fail-apply":
            code = str(body.get("code") or DEFAULT_FAILURE_CODE)
            message = str(
                body.get("message")
                or f"We currently do not have sufficient capacity in {region} (spike lab: fail-apply)."
            )
            with self.lock:
                self.fail_apply[region] = (code, message)
            return {"region": region, "code": code, "message": message}
        if path == "clear-fail-apply":
            with self.lock:
                self.fail_apply.pop(region, None)
            return {"region": region, "cleared": True}
        if self.proxy is None:
            raise BadInputError("the lab runs without the latency proxy", fix="start it without --no-latency")
        if path == "latency":
            latency_ms, jitter_ms = float(body["latency_ms"]), float(body.get("jitter_ms", 0.0))
            self.proxy.set_latency(region, latency_ms, jitter_ms)
            with self.lock:
                self.region_latency[region].update(latency_ms=latency_ms, jitter_ms=jitter_ms)
            return {"region": region, "latency_ms": latency_ms, "jitter_ms": jitter_ms}
        if path in ("cut", "restore"):
            getattr(self.proxy, path)(region)
            with self.lock:
                self.region_latency[region]["cut"] = path == "cut"
            return {"region": region, "cut": path == "cut"}
        raise BadInputError(f"no route POST /spike-lab/{path}")


def parse_args(argv: list[str]) -> LabSettings:
    parser = argparse.ArgumentParser(prog="python -m loadorch.lab.daemon")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--regions", default="eu-west-2,us-east-1,ap-southeast-1")
    parser.add_argument("--latency", default="")
    parser.add_argument("--target-port", type=int, default=8080)
    parser.add_argument("--ssh-user", default="ec2-user")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--rootfs", choices=("auto", "overlay", "bind"), default="auto")
    args = parser.parse_args(argv)
    latency_ms: dict[str, float] = {}
    jitter_ms: dict[str, float] = {}
    if args.latency and not args.no_latency:
        parsed = load_latency_module().parse_latencies(args.latency)
        latency_ms = dict(parsed)
        jitter_ms = {region: parsed.jitter(region) for region in parsed if parsed.jitter(region)}
    return LabSettings(
        state_dir=args.state_dir.resolve(),
        port=args.port,
        regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()),
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        target_port=args.target_port,
        ssh_user=args.ssh_user,
        latency=not args.no_latency,
        rootfs=args.rootfs,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    daemon = LabDaemon(settings)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: daemon.stopping.set())
    try:
        daemon.start()
    except Exception as exc:
        text = exc.render() if isinstance(exc, SpikeError) else f"{type(exc).__name__}: {exc}"
        log(f"could not start: {text}")
        if not isinstance(exc, SpikeError):
            traceback.print_exc()
        with contextlib.suppress(OSError):
            daemon.paths.startup_error.write_text(text + "\n")
        with contextlib.suppress(Exception):
            daemon.stop()
        return 3
    while not daemon.stopping.wait(1.0):
        pass
    daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
