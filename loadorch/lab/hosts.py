"""The lab's hosts, on the daemon's side: an address for each new instance, its boot, its end.

`HostManager.create` is called while moto handles RunInstances: it picks the host's address
(which moto then reports as the instance's public IP) and returns at once; a thread per host
makes its network namespace, starts its init (`loadorch.lab.guest`) and then waits for that
init to end, for whatever reason:
- TerminateInstances (`terminate`): SIGTERM to the host's init, which stops every process of
  the host; then its namespace and files are removed.
- The host's own power-off (the bootstrap's TTL, `shutdown -h +N`): the lab applies the
  instance's shutdown behaviour in moto (terminate, or stop) through `on_poweroff`, then
  removes the host.
- `lose_region`: the region's hosts vanish abruptly (SIGKILL, namespace deleted) while moto
  still lists them as running, as if their availability zone died.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

import loadorch
from loadorch.errors import InfrastructureError
from loadorch.lab import network
from loadorch.lab.console import console_tail
from loadorch.lab.guest import CONSOLE_FILE, STATUS_FILE, USER_DATA_FILE, GuestConfig

TARGET_HOST_NAME = "target.spike-lab.test"
BOOTSTRAP_MARKER = "opt/spike/bootstrap-done"  # the module's default injector_workdir, in the upper dir
TERMINATE_GRACE_S = 8.0


@dataclass
class Host:
    """One instance's host. `state`: booting, running, failed, terminating, terminated, stopped, lost."""

    instance_id: str
    region: str
    account_id: str
    region_number: int
    host_number: int
    address: str
    host_dir: Path
    shutdown_behaviour: str = "stop"
    launched_at: float = field(default_factory=time.time)
    state: str = "booting"
    process: subprocess.Popen[bytes] | None = None
    keys_at: float | None = None  # when the console first showed the host keys
    ended_at: float | None = None
    final_console: str = ""
    note: str = ""

    @property
    def netns(self) -> str:
        return network.netns_name(self.instance_id)

    @property
    def veth(self) -> str:
        return network.veth_name(self.region_number, self.host_number)

    def guest_status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.host_dir / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def console(self) -> str:
        if self.final_console:
            return self.final_console
        try:
            return (self.host_dir / CONSOLE_FILE).read_text(errors="replace")
        except OSError:
            return ""

    def snapshot(self) -> dict[str, Any]:
        """What `spike lab hosts` shows of the host (JSON)."""
        status = self.guest_status()
        return {
            "instance_id": self.instance_id,
            "region": self.region,
            "address": self.address,
            "netns": self.netns,
            # the console shows the keys as soon as the guest wrote them: so does the state
            "state": "running" if self.state == "booting" and status.get("keys_printed") else self.state,
            "host_keys_on_console": bool(status.get("keys_printed")) or self.keys_at is not None,
            "sshd": bool(status.get("sshd")) and self.state in ("booting", "running"),
            "user_data_exit": status.get("user_data_exit"),
            "bootstrap_done": (self.host_dir / "upper" / BOOTSTRAP_MARKER).is_file(),
            "ttl_at": status.get("ttl_at"),
            "launched_at": self.launched_at,
            "keys_after_s": None if self.keys_at is None else round(self.keys_at - self.launched_at, 3),
            "ended_at": self.ended_at,
            "shutdown_behaviour": self.shutdown_behaviour,
            "note": self.note or status.get("error") or "",
        }


def overlay_of_root_error(scratch: Path) -> str | None:
    """None when this kernel mounts an overlay with / as its lower layer (what hosts use), else why not."""
    dirs = {name: scratch / name for name in ("upper", "work", "merged")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir=/,upperdir={dirs['upper']},workdir={dirs['work']}"
    try:
        # in a throwaway mount namespace: the mount is gone when `mount` exits
        done = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                options,
                str(dirs["merged"]),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited with {done.returncode}")


PowerOff = Callable[[Host], None]  # the host powered itself off: apply its shutdown behaviour in moto
RegionAdded = Callable[[str, int], None]  # a region got its number (edge address, latency proxy)


class HostManager:
    def __init__(
        self,
        state_dir: Path,
        *,
        ssh_user: str,
        regions: tuple[str, ...],
        on_poweroff: PowerOff,
        on_region_added: RegionAdded,
        rootfs: str = "overlay",
        python: str = sys.executable,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.hosts_dir = self.state_dir / "hosts"
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        self.ssh_user = ssh_user
        self.on_poweroff = on_poweroff
        self.on_region_added = on_region_added
        self.python = python
        self.rootfs = rootfs
        self.lock = threading.RLock()
        self.hosts: dict[str, Host] = {}
        self.regions: dict[str, int] = {}
        self._next_host: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        for region in regions:
            self.region_number(region)

    # -- regions and addresses -----------------------------------------------------------------

    def region_number(self, region: str) -> int:
        """Region i (1-based, in the order of `lab up`; new regions get the next free number)."""
        with self.lock:
            if region not in self.regions:
                number = len(self.regions) + 1
                if number > network.MAX_REGIONS:
                    raise InfrastructureError(
                        f"the lab has no room for region {region}: {network.MAX_REGIONS} at most"
                    )
                self.regions[region] = number
                self._next_host[region] = 1
                self.on_region_added(region, number)
            return self.regions[region]

    def _allocate(self, region: str) -> int:
        used = {
            h.host_number
            for h in self.hosts.values()
            if h.region == region and h.state not in ("terminated", "stopped")
        }
        start = self._next_host[region]
        for offset in range(network.MAX_HOSTS_PER_REGION):
            number = (start - 1 + offset) % network.MAX_HOSTS_PER_REGION + 1
            if number not in used:
                self._next_host[region] = number % network.MAX_HOSTS_PER_REGION + 1
                return number
        raise InfrastructureError(
            f"{region} has {network.MAX_HOSTS_PER_REGION} lab hosts already",
            where=region,
            fix="terminate some instances first",
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def create(
        self,
        instance_id: str,
        region: str,
        account_id: str,
        *,
        authorized_keys: list[str],
        user_data: bytes | None,
        shutdown_behaviour: str,
    ) -> Host:
        """Reserve the instance's address and start its boot in the background; returns at once."""
        number = self.region_number(region)
        with self.lock:
            host_number = self._allocate(region)
            host = Host(
                instance_id=instance_id,
                region=region,
                account_id=account_id,
                region_number=number,
                host_number=host_number,
                address=network.host_address(number, host_number),
                host_dir=self.hosts_dir / instance_id,
                shutdown_behaviour=shutdown_behaviour,
            )
            self.hosts[instance_id] = host
        host.host_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("upper", "work", "root"):
            (host.host_dir / sub).mkdir(exist_ok=True)
        if user_data is not None:
            fd = os.open(host.host_dir / USER_DATA_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(user_data)
        GuestConfig(
            instance_id=instance_id,
            region=region,
            hostname="ip-" + host.address.replace(".", "-"),
            address=host.address,
            host_dir=str(host.host_dir),
            ssh_user=self.ssh_user,
            authorized_keys=authorized_keys,
            hosts_entries=[f"{network.edge_address(number)} {TARGET_HOST_NAME}"],
            mask_paths=[str(self.state_dir.resolve())],
            has_user_data=user_data is not None,
            rootfs=self.rootfs,
        ).save(host.host_dir / "guest.json")
        thread = threading.Thread(target=self._live, args=(host,), name=f"host-{instance_id}", daemon=True)
        with self.lock:
            self._threads.append(thread)
        thread.start()
        return host

    def _live(self, host: Host) -> None:
        """The host's whole life, in its own thread: boot, wait for the end, clean up."""
        try:
            network.create_host_network(host.instance_id, host.region_number, host.host_number)
            with self.lock:
                if host.state != "booting":  # terminated or lost while the network was made
                    self._cleanup(host)
                    return
                host.process = self._spawn(host)
            self._wait(host)
        except Exception as exc:
            host.note = f"boot failed: {exc}"
            with self.lock:
                if host.state == "booting":
                    host.state = "failed"
            with contextlib.suppress(Exception):
                network.delete_host_network(host.netns, host.veth)
            return
        with self.lock:
            state = host.state
            status = host.guest_status()
        if state == "terminating":
            self._cleanup(host)
        elif state == "lost":
            pass
        elif status.get("phase") == "powered-off":
            host.note = f"powered itself off ({status.get('poweroff_reason')})"
            with contextlib.suppress(Exception):
                self.on_poweroff(host)
            self._cleanup(
                host, final_state="terminated" if host.shutdown_behaviour == "terminate" else "stopped"
            )
        else:
            host.note = (
                f"its init ended unexpectedly (exit {host.process.returncode if host.process else '?'})"
            )
            with self.lock:
                host.state = "failed"
            with contextlib.suppress(Exception):
                network.delete_host_network(host.netns, host.veth)

    def _spawn(self, host: Host) -> subprocess.Popen[bytes]:
        argv = [
            network.IP, "netns", "exec", host.netns,
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--uts", "--",
            self.python, "-m", "loadorch.lab.guest", str(host.host_dir / "guest.json"),
        ]  # fmt: skip
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(Path(loadorch.__file__).resolve().parents[1]),
            "LANG": "C.UTF-8",
        }
        with (host.host_dir / "guest.log").open("ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _wait(self, host: Host) -> None:
        """Until the host's init ends; notes when its console first shows the host keys."""
        assert host.process is not None
        while True:
            try:
                host.process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if host.keys_at is None and host.guest_status().get("keys_printed"):
                with self.lock:
                    host.keys_at = time.time()
                    if host.state == "booting":
                        host.state = "running"
        if host.keys_at is None and host.guest_status().get("keys_printed"):
            host.keys_at = time.time()

    def _cleanup(self, host: Host, final_state: str = "terminated") -> None:
        """The host's namespace and files go; its console stays readable (EC2 keeps it a while)."""
        host.final_console = host.console()
        with contextlib.suppress(Exception):
            network.delete_host_network(host.netns, host.veth)
        shutil.rmtree(host.host_dir, ignore_errors=True)
        with self.lock:
            host.state = final_state
            host.ended_at = time.time()

    def _signal_init(self, host: Host, sig: signal.Signals) -> None:
        """Send `sig` to the host's init (the child of `unshare`)."""
        if host.process is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(host.process.pid).children():
                child.send_signal(sig)

    def terminate(self, instance_id: str) -> None:
        """TerminateInstances: the host shuts down and is removed, in the background."""
        with self.lock:
            host = self.hosts.get(instance_id)
            if host is None or host.state in ("terminating", "terminated", "stopped"):
                return
            previous = host.state
            host.state = "terminating"
        if previous in ("lost", "failed"):
            threading.Thread(target=self._cleanup, args=(host,), daemon=True).start()
            return
        threading.Thread(target=self._stop, args=(host,), name=f"stop-{instance_id}", daemon=True).start()

    def _stop(self, host: Host) -> None:
        process = host.process
        if process is None:
            return  # still booting: the boot thread sees "terminating" and cleans up
        self._signal_init(host, signal.SIGTERM)
        try:
            process.wait(timeout=TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # unshare --kill-child: its child, the host's init, dies with it

    def lose_region(self, region: str) -> list[str]:
        """Every live host of `region` vanishes at once: SIGKILL, namespace deleted; moto is not told."""
        with self.lock:
            victims = [
                h for h in self.hosts.values() if h.region == region and h.state in ("booting", "running")
            ]
            for host in victims:
                host.state = "lost"
                host.note = "lost: its processes were killed and its network namespace deleted (lose-hosts)"
        for host in victims:
            host.final_console = host.console()
            network.delete_host_network(host.netns, host.veth)
            with self.lock:
                host.ended_at = time.time()
        return [h.instance_id for h in victims]

    def shutdown_all(self, timeout_s: float = 30.0) -> None:
        """Terminate every host and wait (bounded) for their threads."""
        with self.lock:
            ids = list(self.hosts)
        for instance_id in ids:
            self.terminate(instance_id)
        deadline = time.monotonic() + timeout_s
        with self.lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            if host.state != "terminated":
                self._cleanup(host, final_state=host.state if host.state == "stopped" else "terminated")

    # -- queries -------------------------------------------------------------------------------

    def get(self, instance_id: str) -> Host | None:
        with self.lock:
            return self.hosts.get(instance_id)

    def console(self, instance_id: str) -> str:
        """What GetConsoleOutput shows: empty until the host has written something."""
        host = self.get(instance_id)
        return "" if host is None else console_tail(host.console())

    def snapshots(self) -> list[dict[str, Any]]:
        with self.lock:
            hosts = list(self.hosts.values())
        return [host.snapshot() for host in hosts]
