"""Real OpenSSH servers on loopback addresses, for the SSH transport's tests and benchmark.

    with SshdHost(tmp_path / "h1", "127.0.0.2", authorized_key=public_line) as host:
        host.address, host.port, host.host_fingerprint   # what an SshHost needs
        host.home                                        # where relative remote paths lead on this host
        host.drop_connections()                          # every open SSH connection dies; sshd keeps listening
        host.stop(); host.start()                        # sshd down and up again: same host key, same port

Each host is Debian's `/usr/sbin/sshd` in the foreground (`-D -e`) with its own config, host key
(made by `ssh-keygen`, not by the code under test), authorized_keys and log, all under `root`.
Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2, 127.0.0.3, ... are separate "machines"
with separate host keys, without any network set-up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil

from loadorch.metrics.stack import ThrowawayServer, die_with_parent, log_tail

SSHD = "/usr/sbin/sshd"
INSTALL_HINT = "run `make test`, which installs openssh-server"


def _require(program: str) -> None:
    if not os.access(program, os.X_OK):
        raise RuntimeError(f"{program} is missing: {INSTALL_HINT}")


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _ssh_keygen(*args: str) -> str:
    ssh_keygen = "/usr/bin/ssh-keygen"
    _require(ssh_keygen)
    done = subprocess.run([ssh_keygen, *args], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout


def sshd_config(root: Path, address: str, port: int) -> str:
    """The config of a test host: key-only root login, everything under `root`, generous limits.

    Every host gets its own home for relative paths, as separate machines would: commands start
    there (bash, root's login shell, sources $BASH_ENV, which changes into it) and so does SFTP
    (`internal-sftp -d`).

    `SHLVL=1`: bash sources ~/.bashrc for every command run over SSH when it thinks it is the
    top-level shell, and this machine's /root/.bashrc runs `pyenv init` (~100 ms per command).
    Injectors have stock rc files; the tests and the benchmark measure spike, not this machine's
    shell set-up.
    """
    return f"""\
ListenAddress {address}:{port}
AddressFamily inet
HostKey {root / "ssh_host_ed25519_key"}
AuthorizedKeysFile {root / "authorized_keys"}
PidFile {root / "sshd.pid"}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp -d {root / "home"}
ClientAliveInterval 5
ClientAliveCountMax 3
MaxStartups 100
MaxSessions 50
LogLevel INFO
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
SetEnv SHLVL=1 BASH_ENV={root / "home.sh"}
"""


class SshdHost(ThrowawayServer):
    """One throwaway sshd on `address`; port 0 picks a free one (kept across stop/start)."""

    def __init__(
        self,
        root: Path,
        address: str = "127.0.0.2",
        port: int = 0,
        *,
        authorized_key: str,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.root = Path(root)
        self.address = address
        self.port = port
        self.authorized_key = authorized_key
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = self.root / "sshd.log"
        self.config_file = self.root / "sshd_config"
        self.host_key_file = self.root / "ssh_host_ed25519_key"
        self.home = self.root / "home"  # where relative remote paths of this host lead
        self.host_public_key = ""
        self.host_fingerprint = ""

    def _prepare(self) -> None:
        """Keys and config, once: a restarted host must present the same key on the same port."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key_file.exists():
            _ssh_keygen(
                "-q", "-t", "ed25519", "-N", "", "-C", f"host@{self.address}", "-f", str(self.host_key_file)
            )
        self.host_key_file.chmod(0o600)
        self.host_public_key = Path(f"{self.host_key_file}.pub").read_text().strip()
        # ssh-keygen's own fingerprint, so tests compare against OpenSSH, not against spike's code.
        self.host_fingerprint = _ssh_keygen("-l", "-E", "sha256", "-f", f"{self.host_key_file}.pub").split()[
            1
        ]
        (self.root / "authorized_keys").write_text(self.authorized_key.strip() + "\n")
        self.home.mkdir(exist_ok=True)
        (self.root / "home.sh").write_text(f"cd {self.home}\n")
        if not self.port:
            self.port = _free_port(self.address)
        self.config_file.write_text(sshd_config(self.root, self.address, self.port))

    def start(self) -> SshdHost:
        if self.process is not None and self.process.poll() is None:
            return self
        _require(SSHD)
        self._prepare()
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation dir
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so a host started from
        # a helper thread (the boot-wait test) must not be tied to it; those are stopped explicitly.
        tied = threading.current_thread() is threading.main_thread()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent if tied else None,
            )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"sshd on {self.address}:{self.port} exited with {self.process.returncode}:\n"
                    f"{log_tail(self.log_file)}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), 1) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd on {self.address}:{self.port} did not answer within {self.startup_timeout_s} s:\n"
                    f"{log_tail(self.log_file)}"
                )
            time.sleep(0.05)

    def _descendants(self, *, sshd_only: bool) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if not sshd_only or child.name() == "sshd":
                    found.append(child)
        return found

    @staticmethod
    def _kill(processes: list[psutil.Process], timeout_s: float = 5.0) -> None:
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        # Grandchildren are reaped by init, which may take its time: a zombie is dead enough.
        deadline = time.monotonic() + timeout_s
        for proc in processes:
            while time.monotonic() < deadline:
                try:
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.01)

    def drop_connections(self) -> int:
        """SIGKILL every per-connection sshd (not the listener): clients see their connection die.

        Processes the sessions started (commands, detached jobs) are left alone, as after a network
        drop. Returns how many sshd processes were killed.
        """
        victims = self._descendants(sshd_only=True)
        self._kill(victims)
        return len(victims)

    def stop(self) -> None:
        """sshd goes down: its connections, what they still run, and the listener.

        Detached processes (setsid + nohup, reparented to init) are no descendants of sshd's and
        keep running, as on a host whose sshd died: start() brings it back on the same address,
        port and host key.
        """
        self._kill(self._descendants(sshd_only=False))
        super().stop()


def start_hosts(root: Path, n: int, authorized_key: str) -> list[SshdHost]:
    """`n` started hosts on 127.0.0.2, 127.0.0.3, ... under root/host1, root/host2, ...; all or none."""
    hosts: list[SshdHost] = []
    try:
        for i in range(n):
            host = SshdHost(Path(root) / f"host{i + 1}", f"127.0.0.{i + 2}", authorized_key=authorized_key)
            hosts.append(host)
            host.start()
    except BaseException:
        for host in hosts:
            host.stop()
        raise
    return hosts
