"""One pinned SSH connection per host, and running one command on it: the layer under `ssh.SshFleet`.

Trust: a host is only ever accepted if its host key matches a pinned SHA256 fingerprint
(`hostkeys.PinnedHostKeyPolicy`). Fabric's connections are built with an empty SSH config and a
lazy Fabric config, so no `~/.ssh/config`, `known_hosts`, agent or default key files are consulted,
and the policy replaces Fabric's `AutoAddPolicy` before anything is opened.

A `Link` owns one host's `fabric.Connection`; its lock only guards opening and replacing it.
`exec_command` runs one command on its own channel with a deadline and tells a dead connection
(`Dropped`) from a deadline (`TimedOut`), so the fleet can reconnect once and retry.
"""

from __future__ import annotations

import contextlib
import errno
import math
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import paramiko
from fabric import Config, Connection
from paramiko.config import SSHConfig
from paramiko.ssh_exception import NoValidConnectionsError

from loadorch.errors import InjectorError
from loadorch.transport.hostkeys import HostKeyMismatch, PinnedHostKeyPolicy
from loadorch.transport.remote_scripts import shell

_BUFFER = 1 << 16
_SEND_BLOCK = 1 << 18
_TAIL_CHARS = 600
# A TERM-ed command gets this long on the host beyond our own deadline before `timeout` kills it.
_KILL_AFTER_S = 5


class TransportError(InjectorError):
    """An SSH operation failed on one or more injectors; `where` names them, `failures` has each one.

    Like Fabric's `GroupException`: `results` keeps what the hosts that did not fail returned.
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        fix: str | None = None,
        failures: Mapping[str, TransportError] | None = None,
        results: Mapping[str, object] | None = None,
    ) -> None:
        self.failures: dict[str, TransportError] = dict(failures or {})
        self.results: dict[str, object] = dict(results or {})
        super().__init__(message, where=where, fix=fix)


@dataclass(frozen=True, kw_only=True)
class SshHost:
    """An injector reachable over SSH, and the only host keys it may present."""

    name: str  # injector id; used in every message
    address: str
    port: int = 22
    user: str = "root"
    key_path: Path  # the operator's private key file
    host_key_fingerprints: tuple[str, ...]  # pinned SHA256 fingerprints; empty: spike refuses to connect

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user}@{self.address}:{self.port})"


@dataclass(frozen=True)
class CommandResult:
    """What a remote command left behind; exit_code is -1 when it was killed by a signal."""

    exit_code: int
    stdout: str
    stderr: str


# ---------------------------------------------------------------- internal signals


class Dropped(Exception):
    """The connection died under an operation; `sent`: a command may already have started."""

    def __init__(self, cause: BaseException, *, sent: bool) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.sent = sent


class TimedOut(Exception):
    pass


class Unusable(Exception):
    """The host answered, but not in a way spike can use; carries the fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def describe(exc: BaseException) -> str:
    if isinstance(exc, Dropped):
        exc = exc.cause
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def short(command: str, limit: int = 80) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


def with_deadline(command: str, timeout_s: float) -> str:
    """`command` under the host's own deadline, so a command we stop waiting for does not linger."""
    limit = math.ceil(timeout_s) + 1
    inner = shlex.quote(command)
    return shell(
        f"if command -v timeout >/dev/null 2>&1; then exec timeout -k {_KILL_AFTER_S} {limit} /bin/sh -c {inner}; "
        f"else exec /bin/sh -c {inner}; fi"
    )


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Both output streams until EOF and the exit status has arrived, or TimedOut at the deadline."""
    out, err = bytearray(), bytearray()
    while True:
        progressed = False
        if channel.recv_ready():
            out += channel.recv(_BUFFER)
            progressed = True
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(_BUFFER)
            progressed = True
        if progressed:
            continue
        remaining = deadline - time.monotonic()
        if channel.eof_received or channel.closed:
            # Both streams are complete; only the exit status may still be on its way.
            if remaining <= 0 or not channel.status_event.wait(remaining):
                raise TimedOut
            return bytes(out), bytes(err)
        if remaining <= 0:
            raise TimedOut
        # The channel's pipe becomes readable on new data, on EOF and when the channel closes.
        select.select([channel], [], [], remaining)


def exec_command(
    conn: Connection, command: str, timeout_s: float, open_timeout_s: float, stdin: Path | None = None
) -> CommandResult:
    """Run one command on its own channel, `stdin` (a file) streamed to it.

    Dropped if the connection dies, TimedOut at the deadline (which covers sending stdin too).
    """
    transport = conn.transport
    if transport is None or not transport.is_active():
        raise Dropped(EOFError("the connection is closed"), sent=False)
    try:
        channel = transport.open_session(timeout=open_timeout_s)
    except (EOFError, OSError, paramiko.SSHException) as exc:
        raise Dropped(exc, sent=False) from exc
    deadline = time.monotonic() + timeout_s
    expired = threading.Event()

    def expire() -> None:
        # exec_command waits for the server's answer without a time limit; closing wakes it up.
        expired.set()
        channel.close()

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            channel.exec_command(command)
            if stdin is not None:
                # Spike's scripts print nothing while they read, so the output window cannot fill up
                # and block the sender.
                with stdin.open("rb") as source:
                    for block in iter(lambda: source.read(_SEND_BLOCK), b""):
                        channel.sendall(block)
            channel.shutdown_write()
            out, err = _collect(channel, deadline)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            if expired.is_set():
                raise TimedOut from exc
            raise Dropped(exc, sent=True) from exc
        if expired.is_set():
            raise TimedOut
        status = channel.recv_exit_status()
        if status == -1 and not transport.is_active():
            raise Dropped(EOFError("the connection was lost while the command ran"), sent=True)
        return CommandResult(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    finally:
        watchdog.cancel()
        channel.close()


def is_drop(exc: BaseException, conn: Connection) -> bool:
    if isinstance(exc, EOFError | paramiko.SSHException | ConnectionError | TimeoutError):
        return True
    # Anything else (an SFTP "permission denied", a local file error) is only a drop if the
    # connection is gone too.
    return not conn.is_connected


@dataclass(frozen=True)
class ConnectFailure:
    message: str
    fix: str
    retry: bool  # worth trying again while an instance may still be booting
    auth: bool = False


def connect_failure(host: SshHost, exc: BaseException, timeout_s: float) -> ConnectFailure:
    """Translate a connect error into a message, a fix and whether booting could explain it."""
    target = f"{host.address}:{host.port}"
    booting = "if the instance is still booting, give it time (boot_wait_s)"
    if isinstance(exc, HostKeyMismatch):
        return ConnectFailure(
            str(exc),
            f"do not use this host until you know why: if {host.name} was really rebuilt, pin its new "
            "fingerprint (for EC2 read it from the instance's console output); otherwise something "
            f"else is answering at {target}",
            retry=False,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return ConnectFailure(
            f"authentication as {host.user} with key {host.key_path} was refused ({exc})",
            f"put the public key of {host.key_path} into ~{host.user}/.ssh/authorized_keys on the host "
            "(EC2: launch with that key pair), or give the right key",
            retry=True,
            auth=True,
        )
    if isinstance(exc, NoValidConnectionsError | ConnectionRefusedError):
        return ConnectFailure(
            f"connection refused: nothing listens on {target}",
            f"start sshd on the host or correct the address/port; {booting}",
            retry=True,
        )
    if isinstance(exc, socket.gaierror):
        return ConnectFailure(
            f"cannot resolve {host.address}: {exc}", "give an IP address or a resolvable name", False
        )
    if isinstance(exc, TimeoutError):
        return ConnectFailure(
            f"no answer from {target} within {timeout_s:g} s",
            f"check that the host is up and that firewalls/security groups let this machine reach port {host.port}; "
            + booting,
            retry=True,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ConnectFailure(
            f"{target} is unreachable ({exc})", f"check the route to {host.address}; {booting}", True
        )
    if isinstance(exc, EOFError | ConnectionError | paramiko.SSHException):
        return ConnectFailure(
            f"the SSH handshake with {target} failed: {describe(exc)}",
            f"check sshd's log on the host; {booting}",
            retry=True,
        )
    return ConnectFailure(
        f"cannot connect to {target}: {describe(exc)}", "check the host's SSH settings", False
    )


@dataclass(frozen=True)
class Settings:
    connect_timeout_s: float
    command_timeout_s: float
    keepalive_s: float


def open_connection(host: SshHost, settings: Settings) -> Connection:
    """A connected Fabric Connection that trusts only the pinned host keys; raises paramiko errors."""
    timeout = settings.connect_timeout_s
    sock = socket.create_connection((host.address, host.port), timeout=timeout)
    # Without TCP_NODELAY each command waits ~40 ms for Nagle + delayed ACK (paramiko sends its
    # small request messages back to back); OpenSSH sets it too. Keepalive: a peer that vanished
    # is eventually noticed even on an idle connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn = Connection(
        host.address,
        user=host.user,
        port=host.port,
        # An explicit empty SSHConfig: no ~/.ssh/config or /etc/ssh/ssh_config (no surprise
        # IdentityFile, ProxyCommand or HostName); lazy: no Fabric/Invoke config files either.
        config=Config(ssh_config=SSHConfig(), lazy=True),
        connect_kwargs={
            "sock": sock,
            "key_filename": [str(host.key_path)],
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": timeout,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            "channel_timeout": timeout,
        },
    )
    # Fabric installs AutoAddPolicy; its SSHClient has no host keys loaded, so this policy is asked
    # about every server key and is the only thing that can accept one.
    conn.client.set_missing_host_key_policy(PinnedHostKeyPolicy(host.host_key_fingerprints))
    try:
        conn.open()
        assert conn.transport is not None
        conn.transport.set_keepalive(max(1, round(settings.keepalive_s)))
    except BaseException:
        conn.client.close()
        sock.close()
        raise
    return conn


class Link:
    """One host's connection: opened, replaced after a drop, closed; its lock guards only that."""

    def __init__(self, host: SshHost, settings: Settings) -> None:
        self.host = host
        self.settings = settings
        self.lock = threading.Lock()
        self.sftp_lock = threading.Lock()
        self.conn: Connection | None = None
        self.sftp_pair: tuple[Connection, paramiko.SFTPClient] | None = None
        self.opened = 0
        self.closed = False

    def error(self, message: str, fix: str | None = None) -> TransportError:
        return TransportError(message, where=self.host.where, fix=fix)

    def _precheck(self) -> None:
        if not self.host.host_key_fingerprints:
            raise self.error(
                "no host key fingerprint is pinned for this host, and spike never trusts an unknown key",
                fix="give the host's SHA256 fingerprint(s) (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` "
                "on the host; for EC2 they are read from the console output)",
            )
        if not Path(self.host.key_path).is_file():
            raise self.error(
                f"the private key {self.host.key_path} does not exist",
                fix="give the path of the key whose public half is in the host's authorized_keys",
            )

    def open_once(self) -> Connection:
        """Open a connection now (one attempt); raises the raw paramiko/socket error."""
        self._precheck()
        conn = open_connection(self.host, self.settings)
        self.opened += 1
        return conn

    def _replace(self, failed: Connection | None) -> Connection:
        # Called with the lock held.
        if self.closed:
            raise self.error(
                "the SSH fleet is closed", fix="this is a bug in spike: an operation ran after close()"
            )
        if self.conn is not None and self.conn is not failed and self.conn.is_connected:
            return self.conn  # another thread has reconnected already
        self._discard()
        try:
            self.conn = self.open_once()
        except TransportError:
            raise
        except Exception as exc:
            failure = connect_failure(self.host, exc, self.settings.connect_timeout_s)
            raise self.error(failure.message, failure.fix) from exc
        return self.conn

    def connection(self) -> Connection:
        """The open connection, (re)opening it if there is none or it died."""
        with self.lock:
            if self.conn is not None and self.conn.is_connected and not self.closed:
                return self.conn
            return self._replace(self.conn)

    def reconnect(self, failed: Connection) -> Connection:
        with self.lock:
            return self._replace(failed)

    def install(self, conn: Connection) -> None:
        with self.lock:
            self._discard()
            self.conn = conn
            if self.closed:  # close() ran while this connection was being opened
                self._discard()

    def forget(self, conn: Connection) -> None:
        """Close `conn` if it is still the current connection: the next operation opens a new one."""
        with self.lock:
            if self.conn is conn:
                self._discard()

    def _discard(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
            with contextlib.suppress(Exception):
                conn.client.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._discard()

    @contextlib.contextmanager
    def shared_sftp(self, conn: Connection) -> Iterator[paramiko.SFTPClient]:
        """The connection's one SFTP session for small operations, used by one thread at a time."""
        with self.sftp_lock:
            if self.sftp_pair is None or self.sftp_pair[0] is not conn:
                if self.sftp_pair is not None:
                    with contextlib.suppress(Exception):
                        self.sftp_pair[1].close()
                self.sftp_pair = (conn, open_sftp(conn, self.settings))
            yield self.sftp_pair[1]


def open_sftp(conn: Connection, settings: Settings) -> paramiko.SFTPClient:
    sftp = conn.client.open_sftp()
    # A read that gets no answer raises socket.timeout (a drop) instead of hanging.
    sftp.get_channel().settimeout(settings.command_timeout_s)
    return sftp
