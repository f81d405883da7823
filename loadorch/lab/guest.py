"""A lab host's init: what an EC2 instance's boot does, as PID 1 of the host's own namespaces.

The lab daemon starts it, for each instance RunInstances created, as

    ip netns exec spkl-<instance id> \\
        unshare --mount --propagation private --pid --fork --kill-child --uts -- \\
        PYTHON -m loadorch.lab.guest HOST_DIR/guest.json

so it runs in the host's network namespace, as PID 1 of a new pid namespace (when it ends, the
kernel kills every process of the host, detached ones too), with its own mounts and hostname.

Boot, in the order of an EC2 boot with cloud-init:
1. The root: an overlay with this machine's `/` as the read-only lower layer and the host's
   own upper and work dirs under the lab's state dir, so every write the host makes (the
   bootstrap's /etc files, /opt/spike, the login user's home) stays in its upper dir; fresh
   /proc (its pid namespace), /sys of its network namespace, /dev and /dev/pts bound, fresh
   tmpfs on /tmp, /run and /dev/shm, and an empty tmpfs over the lab's state dir (a host
   cannot read other hosts' keys); then chroot. Where this kernel cannot mount an overlay of /,
   `bind_root` stands in: the host's own /etc (a copy), /home, /opt, /root and /var/log bound
   over this machine's (the lab says so on the console and in lab.json).
2. cloud-init's init stage: hostname (ip-198-18-i-x), /etc/hosts (with the region's target
   name), /etc/resolv.conf (no DNS leaves the lab), the login user with the key pair's public
   key authorised (cloud-init's `users` and `ssh` modules), fresh ed25519 and ECDSA host keys.
3. sshd (Debian's /usr/sbin/sshd -D -e, no PAM) on the host's address, port 22.
4. user_data as root with bash, the shims of `loadorch.lab.shims` first on its PATH.
5. cloud-init's final stage: the host keys on the console (`loadorch.lab.console`).
Then it reaps orphans and waits: for a power-off the bootstrap scheduled (the TTL), or SIGTERM
from the lab (TerminateInstances). Either way every process of the host gets SIGTERM, then
SIGKILL, and init exits; status.json says which it was.

Standard library only (plus the two text modules above): this program runs inside the host.
"""

from __future__ import annotations

import contextlib
import datetime
import encodings.idna  # noqa: F401  (socket encodes host names with it, lazily: after the root changed)
import json
import os
import pwd
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from loadorch.lab.console import HostKey, boot_lines, finished_line, host_keys_block
from loadorch.lab.shims import SHIM_DIR, SHIM_NAMES, SHIM_SCRIPT_NAME, SHUTDOWN_REQUEST, shim_script

STATUS_FILE = "status.json"
CONSOLE_FILE = "console.log"
USER_DATA_FILE = "user-data"
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOFILE = 65535
HOST_KEY_TYPES = (("ecdsa", "256"), ("ed25519", ""))
SSHD = "/usr/sbin/sshd"
BIND_PATHS = ("etc", "home", "opt", "root", "var/log")
BIND_SHIM_DIR = "/run/spike-lab/shims"


@dataclass(frozen=True)
class GuestConfig:
    """Everything a host's init needs, written by the lab as guest.json in the host's directory."""

    instance_id: str
    region: str
    hostname: str
    address: str
    host_dir: str
    ssh_user: str
    authorized_keys: list[str]
    hosts_entries: list[str]  # /etc/hosts lines after localhost and the host's own name
    mask_paths: list[str] = field(default_factory=list)  # hidden under an empty tmpfs in the host
    has_user_data: bool = False
    rootfs: str = "overlay"  # or "bind", where this kernel cannot mount an overlay of / (see mount_root)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> GuestConfig:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def sshd_config(address: str) -> str:
    """The host's sshd: key-only logins on its address, no PAM, roomy limits for spike's sessions."""
    keys = "".join(f"HostKey /etc/ssh/ssh_host_{kind}_key\n" for kind, _bits in HOST_KEY_TYPES)
    return (
        "# spike lab host: written at first boot (the image's sshd, emulated)\n"
        f"ListenAddress {address}:22\n"
        "AddressFamily inet\n"
        f"{keys}"
        "PidFile /run/sshd.pid\n"
        "PermitRootLogin no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "Subsystem sftp internal-sftp\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 50\n"
        "ClientAliveInterval 15\n"
        "ClientAliveCountMax 4\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "X11Forwarding no\n"
        "LogLevel INFO\n"
    )


class Guest:
    """The host's init; one instance per process, see the module docstring."""

    def __init__(self, config: GuestConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        host_dir = Path(config.host_dir)
        # Kept open across the chroot: the lab reads these files from outside the host.
        self.dir_fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
        self.console: BinaryIO = open(host_dir / CONSOLE_FILE, "ab", buffering=0)  # noqa: SIM115
        self.user_data = (host_dir / USER_DATA_FILE).read_bytes() if config.has_user_data else None
        self.status: dict[str, Any] = {
            "phase": "booting",
            "sshd": False,
            "user_data_exit": None,
            "keys_printed": False,
            "ttl_at": None,
            "poweroff_reason": None,
            "error": None,
            "outer_pid": int(os.readlink("/proc/self")),  # the machine's /proc, before ours is mounted
        }
        self.sshd: subprocess.Popen[bytes] | None = None
        self.user_data_pid: int | None = None
        self.keys: list[HostKey] = []
        self.terminate_requested = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- output --------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.write(text.encode("utf-8", "replace"))

    def set_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=time.time())
        data = (json.dumps(self.status, sort_keys=True) + "\n").encode()
        fd = os.open(f"{STATUS_FILE}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=self.dir_fd)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(f"{STATUS_FILE}.tmp", STATUS_FILE, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    # -- boot ----------------------------------------------------------------------------------

    def boot(self) -> None:
        cfg = self.config
        self.say(boot_lines(cfg.instance_id, cfg.region, cfg.hostname, cfg.address))
        socket.sethostname(cfg.hostname)
        self.mount_root()
        self.init_stage()
        self.start_sshd()
        self.set_status(phase="running")
        if self.user_data is None:
            self.final_stage(None)
        else:
            self.start_user_data()

    def mount_root(self) -> None:
        if self.config.rootfs == "bind":
            self.bind_root()
            return
        host_dir = Path(self.config.host_dir)
        root = host_dir / "root"
        _run(
            "mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir=/,upperdir={host_dir / 'upper'},workdir={host_dir / 'work'}", str(root),
        )  # fmt: skip
        _run("mount", "-t", "proc", "proc", str(root / "proc"))
        _run("mount", "--rbind", "/sys", str(root / "sys"))
        _run("mount", "--bind", "/dev", str(root / "dev"))
        _run("mount", "--bind", "/dev/pts", str(root / "dev" / "pts"))
        for path, mode in (("dev/shm", "1777"), ("tmp", "1777"), ("run", "0755")):
            _run("mount", "-t", "tmpfs", "-o", f"mode={mode},nosuid,nodev", "tmpfs", str(root / path))
        for hidden in self.config.mask_paths:
            target = root / hidden.lstrip("/")
            if target.is_dir():
                _run("mount", "-t", "tmpfs", "-o", "mode=0700,size=64k", "tmpfs", str(target))
        os.chroot(root)
        os.chdir("/")

    def bind_root(self) -> None:
        """The fallback where overlayfs of / fails: this machine's root, with the host's own
        directories bound over the paths the bootstrap and the login user write (/etc, a copy;
        /home, /opt, /root, /var/log, empty at boot) and fresh /proc, /tmp, /run, /dev/shm. A write
        anywhere else would reach this machine: the overlay is the containment, this is its stand-in."""
        own = Path(self.config.host_dir) / "upper"
        _run("cp", "-a", "/etc", str(own / "etc"))
        for path in BIND_PATHS:
            (own / path).mkdir(parents=True, exist_ok=True)
            _run("mount", "--bind", str(own / path), f"/{path}")
        _run("mount", "-t", "proc", "proc", "/proc")
        for path, mode in (("/dev/shm", "1777"), ("/tmp", "1777"), ("/run", "0755")):
            _run("mount", "-t", "tmpfs", "-o", f"mode={mode},nosuid,nodev", "tmpfs", path)
        for hidden in self.config.mask_paths:
            if Path(hidden).is_dir():
                _run("mount", "-t", "tmpfs", "-o", "mode=0700,size=64k", "tmpfs", hidden)
        os.chdir("/")
        self.say(
            "spike lab: no overlayfs of / on this kernel: the host's own /etc, /home, /opt, /root and /var/log are bound over this machine's\n"
        )

    def init_stage(self) -> None:
        cfg = self.config
        for name, value in (("all", "1"), ("default", "1")):
            with contextlib.suppress(OSError):
                Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text(value)
        self.raise_nofile()
        _replace_file("/etc/hostname", f"{cfg.hostname}\n")
        hosts = ["127.0.0.1 localhost", f"{cfg.address} {cfg.hostname}", *cfg.hosts_entries]
        _replace_file("/etc/hosts", "\n".join(hosts) + "\n")
        # No name server: lookups of other names fail at once instead of leaving the lab.
        _replace_file(
            "/etc/resolv.conf", "# spike lab: no DNS; names are in /etc/hosts\noptions timeout:1 attempts:1\n"
        )
        self.create_user()
        self.make_host_keys()

    def raise_nofile(self) -> None:
        """What the bootstrap's limits.d asks for (without PAM nothing would apply it), as far as
        this machine's hard limit allows when the lab may not raise it."""
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        for wanted in ((NOFILE, NOFILE), (min(NOFILE, hard), hard)):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, wanted)
                break
            except (ValueError, OSError):
                continue
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.say(f"spike lab: open files limit {soft} (hard {hard}) for every process of the host\n")
        self.set_status(nofile=soft)

    def create_user(self) -> None:
        user = self.config.ssh_user
        try:
            pwd.getpwnam(user)
        except KeyError:
            _run("useradd", "--create-home", "--shell", "/bin/bash", "--user-group", user)
        _run("usermod", "--password", "*", user)  # not locked: sshd without PAM refuses locked accounts
        entry = pwd.getpwnam(user)
        ssh_dir = Path(entry.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text("".join(f"{line.strip()}\n" for line in self.config.authorized_keys))
        keys.chmod(0o600)
        for path in (Path(entry.pw_dir), ssh_dir, keys):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if Path("/etc/sudoers.d").is_dir():
            _replace_file("/etc/sudoers.d/90-cloud-init-users", f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
        self.say(
            f"cloud-init: user {user} (uid {entry.pw_uid}): "
            f"{len(self.config.authorized_keys)} authorized key(s) from the instance's key pair\n"
        )

    def make_host_keys(self) -> None:
        for old in Path("/etc/ssh").glob("ssh_host_*"):
            old.unlink()  # this machine's own keys, seen through the lower layer
        comment = f"root@{self.config.hostname}"
        for kind, bits in HOST_KEY_TYPES:
            key = f"/etc/ssh/ssh_host_{kind}_key"
            _run(
                "ssh-keygen",
                "-q",
                "-t",
                kind,
                *(["-b", bits] if bits else []),
                "-N",
                "",
                "-C",
                comment,
                "-f",
                key,
            )
            public_line = Path(f"{key}.pub").read_text().strip()
            fingerprint_line = _run("ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub").strip()
            self.keys.append(HostKey(public_line, fingerprint_line))
            self.say(f"cloud-init: generating {kind} host key: {fingerprint_line.split()[1]}\n")

    def start_sshd(self) -> None:
        Path("/etc/ssh/sshd_config").unlink(missing_ok=True)
        _replace_file("/etc/ssh/sshd_config", sshd_config(self.config.address))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open("/var/log/sshd.log", "ab") as log:
            self.sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": STANDARD_PATH, "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.sshd.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self.sshd.returncode}; see /var/log/sshd.log in the host"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.config.address, 22), 1) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not answer on port 22 within 30 s")
            time.sleep(0.02)
        self.set_status(sshd=True)
        self.say(f"Starting OpenSSH server on {self.config.address}:22 ... [  OK  ]\n")

    def start_user_data(self) -> None:
        assert self.user_data is not None
        if self.user_data.lstrip().startswith(b"#cloud-config"):
            self.say(
                "cloud-init: #cloud-config user_data is not emulated by the spike lab; only scripts run\n"
            )
            self.final_stage(None)
            return
        # /var/lib is this machine's in the bind fallback: cloud-init's files go to the host's /run there
        cloud = Path("/var/lib/cloud" if self.config.rootfs == "overlay" else "/run/spike-lab/cloud")
        scripts = cloud / "instance" / "scripts"
        scripts.mkdir(parents=True, exist_ok=True)
        (cloud / "instance" / "user-data.txt").write_bytes(self.user_data)
        script = scripts / "part-001"
        script.write_bytes(self.user_data)
        script.chmod(0o700)
        shim_dir = Path(SHIM_DIR if self.config.rootfs == "overlay" else BIND_SHIM_DIR)
        shim_dir.mkdir(parents=True, exist_ok=True)
        shim = shim_dir / SHIM_SCRIPT_NAME
        shim.write_text(shim_script())
        shim.chmod(0o755)
        for name in SHIM_NAMES:
            link = shim_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(SHIM_SCRIPT_NAME)
        env = {
            "PATH": f"{shim_dir}:{STANDARD_PATH}",
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
        }
        self.say("cloud-init: running modules for final: scripts-user (user_data, as root, with bash)\n")
        with open("/var/log/cloud-init-output.log", "ab") as output:
            process = subprocess.Popen(
                ["/bin/bash", str(script)],
                cwd="/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.user_data_pid = process.pid
        process.returncode = 0  # reaped by the init loop (waitpid(-1)), never by Popen

    def final_stage(self, user_data_exit: int | None) -> None:
        if user_data_exit is not None:
            with contextlib.suppress(OSError):
                output = Path("/var/log/cloud-init-output.log").read_text(errors="replace")
                self.say(output if output.endswith("\n") or not output else output + "\n")
            self.say(f"cloud-init: user_data (scripts-user) exited with {user_data_exit}\n")
        self.say(host_keys_block(self.keys))
        now = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        self.say(finished_line(now, time.monotonic() - self.started, user_data_exit))
        self.set_status(user_data_exit=user_data_exit, keys_printed=True)

    # -- running -------------------------------------------------------------------------------

    def _wake(self, signum: int, _frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.terminate_requested = True
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"x")

    def install_signals(self) -> None:
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._wake)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.user_data_pid:
                self.user_data_pid = None
                self.final_stage(os.waitstatus_to_exitcode(status))
            elif self.sshd is not None and pid == self.sshd.pid:
                self.sshd.returncode = os.waitstatus_to_exitcode(status)
                self.say(f"sshd exited with {self.sshd.returncode}; restarting it\n")
                self.set_status(sshd=False)
                with contextlib.suppress(Exception):
                    self.start_sshd()

    def poweroff_due(self) -> str | None:
        """The scheduled power-off's message if its time has come; keeps status.ttl_at current."""
        try:
            at_text, _, message = Path(SHUTDOWN_REQUEST).read_text().partition("\n")
            at = float(at_text)
        except (OSError, ValueError):
            if self.status["ttl_at"] is not None:
                self.set_status(ttl_at=None)
            return None
        if self.status["ttl_at"] != at:
            self.set_status(ttl_at=at)
        return (message.strip() or "power-off requested") if time.time() >= at else None

    def run_forever(self) -> int:
        while True:
            with contextlib.suppress(InterruptedError):
                select.select([self.wake_r], [], [], 1.0)
            with contextlib.suppress(OSError):
                os.read(self.wake_r, 4096)
            self.reap()
            if self.terminate_requested:
                self.say("spike lab: the instance is being terminated\n")
                self.shutdown()
                self.set_status(phase="terminated")
                return 0
            message = self.poweroff_due()
            if message is not None:
                self.say(f"Broadcast message: The system is going down for poweroff NOW! ({message})\n")
                self.shutdown()
                self.set_status(phase="powered-off", poweroff_reason=message)
                self.say("reboot: Power down\n")
                return 0

    def shutdown(self, grace_s: float = 5.0) -> None:
        """SIGTERM to every process of the host, SIGKILL to what is left after `grace_s`."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, sig)  # PID 1 of a pid namespace: every process in it but itself
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    pid, _status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    time.sleep(0.05)


def _run(*argv: str) -> str:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, timeout=60, env={"PATH": STANDARD_PATH}
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _replace_file(path: str, text: str, mode: int = 0o644) -> None:
    target = Path(path)
    if target.is_symlink():
        target.unlink()  # e.g. /etc/resolv.conf pointing into this machine's /run
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m loadorch.lab.guest HOST_DIR/guest.json", file=sys.stderr)
        return 2
    guest = Guest(GuestConfig.load(Path(argv[1])))
    guest.install_signals()
    guest.set_status()
    try:
        guest.boot()
    except Exception as exc:  # a failed boot leaves a broken instance, as on EC2: it stays until terminated
        guest.say(f"spike lab: boot failed: {exc}\n")
        guest.set_status(phase="failed", error=str(exc))
    return guest.run_forever()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
