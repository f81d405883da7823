"""The SSH transport: what spike does on remote injectors, over one pinned SSH connection per host.

Remote providers (static SSH hosts, EC2 injectors) hand `SshFleet` their hosts; it deploys
artifacts (`put`, `ensure_bundle`), starts Gatling so that it survives the SSH session
(`start_detached`), polls it (`exit_status`, `read_from`), stops it (`signal`), brings results home
(`fetch_tree`) and measures clock offsets before a synchronized start (`clock_offsets`).

Trust: a host is only ever accepted if its host key matches a pinned SHA256 fingerprint
(`hostkeys.PinnedHostKeyPolicy`). Fabric's connections are built with an empty SSH config and a
lazy Fabric config, so no `~/.ssh/config`, `known_hosts`, agent or default key files are consulted,
and the policy replaces Fabric's `AutoAddPolicy` before anything is opened.

Threading model: one `fabric.Connection` per host, owned by a `_Link` whose lock only guards
opening and replacing that connection. Fleet-wide operations fan out on a `ThreadPoolExecutor`
(one task per host) and gather every host's result or error, so one slow or dead host never holds
up another, and an error names every host that failed. Commands each get their own SSH channel, so
operations on the same host may overlap (a poll while a transfer runs); small SFTP operations share
one SFTP session per connection (paramiko's SFTP client is used under a per-host lock), bulk
transfers open their own.

Robustness: an operation that finds its connection dead (EOF, reset, SSHException, closed channel,
an SFTP time-out) reconnects once, with the same pinned key, and retries; if that fails the error
names the host. Every command has a deadline, enforced here (the channel is closed) and on the host
(coreutils `timeout` kills it a second later), so a dead connection cannot hang a run.

Commands run under `/bin/sh -c` on the host, whatever the user's login shell is.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import posixpath
import re
import select
import shlex
import socket
import stat
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import paramiko
from fabric import Config, Connection
from paramiko.config import SSHConfig
from paramiko.ssh_exception import NoValidConnectionsError

from loadorch.errors import BadInputError, InjectorError
from loadorch.transport.hostkeys import HostKeyMismatch, PinnedHostKeyPolicy, normalize_fingerprint

T = TypeVar("T")

#: What `exit_status` reports for a detached process that vanished without recording its status:
#: killed with SIGKILL (`signal(..., "KILL")`), by the OOM killer, or by a reboot (128 + 9).
KILLED_WITHOUT_STATUS = 137

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SIGNAL = re.compile(r"[A-Z][A-Z0-9]{0,15}|[0-9]{1,2}")
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


@dataclass(frozen=True)
class ClockSample:
    """The host's clock minus this machine's, from the round trip with the smallest RTT.

    The true offset lies within offset_ms +/- rtt_ms / 2.
    """

    offset_ms: float
    rtt_ms: float


# ---------------------------------------------------------------- internal signals


class _Dropped(Exception):
    """The connection died under an operation; `sent`: a command may already have started."""

    def __init__(self, cause: BaseException, *, sent: bool) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.sent = sent


class _TimedOut(Exception):
    pass


class _Unusable(Exception):
    """The host answered, but not in a way spike can use; carries the fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Dropped):
        exc = exc.cause
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(command: str, limit: int = 80) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


def _shell(script: str) -> str:
    """Run `script` under /bin/sh whatever the login shell is."""
    return f"exec /bin/sh -c {shlex.quote(script)}"


def _with_deadline(command: str, timeout_s: float) -> str:
    """`command` under the host's own deadline, so a command we stop waiting for does not linger."""
    limit = math.ceil(timeout_s) + 1
    inner = shlex.quote(command)
    return _shell(
        f"if command -v timeout >/dev/null 2>&1; then exec timeout -k {_KILL_AFTER_S} {limit} /bin/sh -c {inner}; "
        f"else exec /bin/sh -c {inner}; fi"
    )


def _collect(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Both output streams until EOF and the exit status has arrived, or _TimedOut at the deadline."""
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
                raise _TimedOut
            return bytes(out), bytes(err)
        if remaining <= 0:
            raise _TimedOut
        # The channel's pipe becomes readable on new data, on EOF and when the channel closes.
        select.select([channel], [], [], remaining)


def _exec(
    conn: Connection, command: str, timeout_s: float, open_timeout_s: float, stdin: Path | None = None
) -> CommandResult:
    """Run one command on its own channel, `stdin` (a file) streamed to it.

    _Dropped if the connection dies, _TimedOut at the deadline (which covers sending stdin too).
    """
    transport = conn.transport
    if transport is None or not transport.is_active():
        raise _Dropped(EOFError("the connection is closed"), sent=False)
    try:
        channel = transport.open_session(timeout=open_timeout_s)
    except (EOFError, OSError, paramiko.SSHException) as exc:
        raise _Dropped(exc, sent=False) from exc
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
                raise _TimedOut from exc
            raise _Dropped(exc, sent=True) from exc
        if expired.is_set():
            raise _TimedOut
        status = channel.recv_exit_status()
        if status == -1 and not transport.is_active():
            raise _Dropped(EOFError("the connection was lost while the command ran"), sent=True)
        return CommandResult(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    finally:
        watchdog.cancel()
        channel.close()


def _is_drop(exc: BaseException, conn: Connection) -> bool:
    if isinstance(exc, EOFError | paramiko.SSHException | ConnectionError | TimeoutError):
        return True
    # Anything else (an SFTP "permission denied", a local file error) is only a drop if the
    # connection is gone too.
    return not conn.is_connected


@dataclass(frozen=True)
class _Failure:
    message: str
    fix: str
    retry: bool  # worth trying again while an instance may still be booting
    auth: bool = False


def _connect_failure(host: SshHost, exc: BaseException, timeout_s: float) -> _Failure:
    """Translate a connect error into a message, a fix and whether booting could explain it."""
    target = f"{host.address}:{host.port}"
    booting = "if the instance is still booting, give it time (boot_wait_s)"
    if isinstance(exc, HostKeyMismatch):
        return _Failure(
            str(exc),
            f"do not use this host until you know why: if {host.name} was really rebuilt, pin its new "
            "fingerprint (for EC2 read it from the instance's console output); otherwise something "
            f"else is answering at {target}",
            retry=False,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return _Failure(
            f"authentication as {host.user} with key {host.key_path} was refused ({exc})",
            f"put the public key of {host.key_path} into ~{host.user}/.ssh/authorized_keys on the host "
            "(EC2: launch with that key pair), or give the right key",
            retry=True,
            auth=True,
        )
    if isinstance(exc, NoValidConnectionsError | ConnectionRefusedError):
        return _Failure(
            f"connection refused: nothing listens on {target}",
            f"start sshd on the host or correct the address/port; {booting}",
            retry=True,
        )
    if isinstance(exc, socket.gaierror):
        return _Failure(
            f"cannot resolve {host.address}: {exc}", "give an IP address or a resolvable name", False
        )
    if isinstance(exc, TimeoutError):
        return _Failure(
            f"no answer from {target} within {timeout_s:g} s",
            f"check that the host is up and that firewalls/security groups let this machine reach port {host.port}; "
            + booting,
            retry=True,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return _Failure(
            f"{target} is unreachable ({exc})", f"check the route to {host.address}; {booting}", True
        )
    if isinstance(exc, EOFError | ConnectionError | paramiko.SSHException):
        return _Failure(
            f"the SSH handshake with {target} failed: {_describe(exc)}",
            f"check sshd's log on the host; {booting}",
            retry=True,
        )
    return _Failure(f"cannot connect to {target}: {_describe(exc)}", "check the host's SSH settings", False)


@dataclass(frozen=True)
class _Settings:
    connect_timeout_s: float
    command_timeout_s: float
    keepalive_s: float


def _open_connection(host: SshHost, settings: _Settings) -> Connection:
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


class _Link:
    """One host's connection: opened, replaced after a drop, closed; its lock guards only that."""

    def __init__(self, host: SshHost, settings: _Settings) -> None:
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
        conn = _open_connection(self.host, self.settings)
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
            failure = _connect_failure(self.host, exc, self.settings.connect_timeout_s)
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
                self.sftp_pair = (conn, _open_sftp(conn, self.settings))
            yield self.sftp_pair[1]


def _open_sftp(conn: Connection, settings: _Settings) -> paramiko.SFTPClient:
    sftp = conn.client.open_sftp()
    # A read that gets no answer raises socket.timeout (a drop) instead of hanging.
    sftp.get_channel().settimeout(settings.command_timeout_s)
    return sftp


def _safe_name(value: str, what: str) -> str:
    if not _SAFE_NAME.fullmatch(value):
        raise BadInputError(
            f"{what} {value!r} is not a plain file name",
            fix="use letters, digits, '.', '_' and '-' only, starting with a letter or digit",
        )
    return value


# ---------------------------------------------------------------- the fleet


class SshFleet:
    """Every injector of a run, reached over SSH; see the module docstring for the threading model."""

    def __init__(
        self,
        hosts: Sequence[SshHost],
        *,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 120.0,
        keepalive_s: float = 5.0,
        boot_wait_s: float = 0.0,
        max_workers: int = 32,
    ) -> None:
        names = [host.name for host in hosts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise BadInputError(
                f"injector names must be unique; repeated: {', '.join(duplicates)}",
                fix="give every host its own name",
            )
        for host in hosts:
            for pin in host.host_key_fingerprints:
                try:
                    normalize_fingerprint(pin)
                except BadInputError as exc:
                    raise BadInputError(exc.message, where=host.where, fix=exc.fix) from None
        self.settings = _Settings(connect_timeout_s, command_timeout_s, keepalive_s)
        self.boot_wait_s = boot_wait_s
        self._links = {host.name: _Link(host, self.settings) for host in hosts}
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, min(max_workers, len(hosts))), thread_name_prefix="spike-ssh"
        )
        self._closed = False

    # ------------------------------------------------------------ plumbing

    @property
    def names(self) -> list[str]:
        return list(self._links)

    @property
    def opened(self) -> dict[str, int]:
        """SSH connections opened per host so far: 1 after connect, +1 per reconnect."""
        return {name: link.opened for name, link in self._links.items()}

    def host(self, name: str) -> SshHost:
        return self._link(name).host

    def _link(self, name: str) -> _Link:
        if self._closed:
            raise TransportError(
                "the SSH fleet is closed", fix="this is a bug in spike: an operation ran after close()"
            )
        try:
            return self._links[name]
        except KeyError:
            raise TransportError(
                f"unknown injector {name!r}; known: {', '.join(self._links) or '(none)'}",
                fix="this is a bug in spike: the plan and the fleet disagree",
            ) from None

    def _parallel(self, what: str, work: Mapping[str, Callable[[_Link], T]]) -> dict[str, T]:
        """Run work[name](link) for every named host at once; one TransportError naming every failure."""
        links = {name: self._link(name) for name in work}
        futures = {name: self._pool.submit(work[name], link) for name, link in links.items()}
        results: dict[str, T] = {}
        failures: dict[str, TransportError] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except TransportError as exc:
                failures[name] = exc
            except Exception as exc:
                failures[name] = links[name].error(
                    f"{what} failed: {_describe(exc)}", fix="this is a bug in spike; rerun with --debug"
                )
        if failures:
            raise _combined(what, failures, results, len(work))
        return results

    def _on_host(
        self, link: _Link, what: str, op: Callable[[Connection], T], *, retry_after_send: bool = True
    ) -> T:
        """op(connection), reconnecting once and retrying if the connection turns out to be dead.

        retry_after_send=False: a command that may already have run is not run a second time.
        """
        conn = link.connection()
        try:
            return self._attempt(link, conn, what, op)
        except _Dropped as drop:
            if drop.sent and not retry_after_send:
                raise link.error(
                    f"the connection was lost while {what} ran ({_describe(drop)}); "
                    "it may or may not have completed",
                    fix="check the host and run it again",
                ) from drop
            first = drop
        try:
            conn = link.reconnect(conn)
        except TransportError as exc:
            raise link.error(
                f"the connection was lost during {what} ({_describe(first)}) and reconnecting failed: {exc.message}",
                fix=exc.fix,
            ) from exc
        try:
            return self._attempt(link, conn, what, op)
        except _Dropped as drop:
            raise link.error(
                f"{what} failed again after reconnecting: {_describe(drop)}",
                fix="check the host's network and sshd's log; the connection keeps dropping",
            ) from drop

    def _attempt(self, link: _Link, conn: Connection, what: str, op: Callable[[Connection], T]) -> T:
        """op(conn); every failure but a dead connection (_Dropped) becomes a TransportError naming the host."""
        try:
            return op(conn)
        except (TransportError, _Dropped):
            raise
        except _TimedOut:
            # A connection that let a deadline pass may be silently dead (paramiko's keepalives do
            # not notice): the next operation starts on a fresh one.
            link.forget(conn)
            raise link.error(
                f"{what} did not finish within its time limit; it was stopped",
                fix="raise timeout_s if it is just slow, or find out on the host why it hangs",
            ) from None
        except _Unusable as exc:
            raise link.error(f"{what} failed: {exc}", fix=exc.fix) from exc
        except Exception as exc:
            if _is_drop(exc, conn):
                raise _Dropped(exc, sent=True) from exc
            raise link.error(f"{what} failed: {_describe(exc)}", fix=_fix_for(exc)) from exc

    def _command(
        self,
        link: _Link,
        what: str,
        remote_command: str,
        timeout_s: float,
        *,
        retry_after_send: bool = True,
        stdin: Path | None = None,
    ) -> CommandResult:
        open_timeout = self.settings.connect_timeout_s
        return self._on_host(
            link,
            what,
            lambda conn: _exec(conn, remote_command, timeout_s, open_timeout, stdin),
            retry_after_send=retry_after_send,
        )

    def _script(self, link: _Link, what: str, script: str, stdin: Path | None = None) -> CommandResult:
        """One of spike's own scripts (safe to run again); a non-zero exit is an error naming the host.

        Without the host-side `timeout` of `run`: these scripts only touch files, and every process
        they start costs the injector CPU (our own deadline still applies).
        """
        result = self._command(link, what, _shell(script), self.settings.command_timeout_s, stdin=stdin)
        if result.exit_code != 0:
            raise link.error(
                f"{what} failed with exit status {result.exit_code}: {_tail(result.stderr) or '(no output)'}",
                fix="check the path, free disk space and permissions on the host",
            )
        return result

    # ------------------------------------------------------------ connecting

    def connect(self) -> None:
        """Open every host's connection in parallel; one TransportError naming every host that failed.

        Refused connections, time-outs and handshake errors are retried until boot_wait_s has
        passed (new instances boot while we wait); authentication failures for at most 30 s of
        that (cloud-init may install the key after sshd starts); a host key mismatch never.
        """
        deadline = time.monotonic() + self.boot_wait_s
        self._parallel(
            "connecting", {name: lambda link: self._connect_link(link, deadline) for name in self._links}
        )

    def _connect_link(self, link: _Link, deadline: float) -> None:
        auth_deadline = min(deadline, time.monotonic() + 30.0)
        delay = 0.2
        while True:
            try:
                link.install(link.open_once())
                return
            except TransportError:
                raise
            except Exception as exc:
                failure = _connect_failure(link.host, exc, self.settings.connect_timeout_s)
                until = auth_deadline if failure.auth else deadline
                if not failure.retry or time.monotonic() + delay > until:
                    waited = (
                        f" (kept trying for {self.boot_wait_s:g} s)"
                        if failure.retry and self.boot_wait_s
                        else ""
                    )
                    raise link.error(failure.message + waited, failure.fix) from exc
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def close(self) -> None:
        """Close every connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for link in self._links.values():
            with link.sftp_lock:
                if link.sftp_pair is not None:
                    with contextlib.suppress(Exception):
                        link.sftp_pair[1].close()
                    link.sftp_pair = None
            link.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ commands

    def run(
        self,
        command: str | Mapping[str, str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        idempotent: bool = True,
    ) -> dict[str, CommandResult]:
        """The same command on every host, or {name: command} on those hosts; in parallel.

        With `check`, any non-zero exit raises one TransportError naming those hosts with the tail
        of their stderr (`results` has every host's result). A command whose connection drops is
        run again after reconnecting, unless `idempotent` is False and it had already been sent.
        """
        commands = dict(command) if isinstance(command, Mapping) else dict.fromkeys(self._links, command)
        limit = self.command_timeout_s if timeout_s is None else timeout_s
        what = f"`{_short(command)}`" if isinstance(command, str) else "the command"

        def on(name: str) -> Callable[[_Link], CommandResult]:
            return lambda link: self._command(
                link,
                f"`{_short(commands[name])}`",
                _with_deadline(commands[name], limit),
                limit,
                retry_after_send=idempotent,
            )

        results = self._parallel(what, {name: on(name) for name in commands})
        if check:
            failed = {name: result for name, result in results.items() if result.exit_code != 0}
            if failed:
                failures = {
                    name: self._links[name].error(
                        f"`{_short(commands[name])}` exited with status {result.exit_code}: "
                        f"{_tail(result.stderr) or _tail(result.stdout) or '(no output)'}",
                        fix=f"run it by hand on the host (ssh -p {self._links[name].host.port} "
                        f"{self._links[name].host.user}@{self._links[name].host.address}) to see why",
                    )
                    for name, result in failed.items()
                }
                raise _combined(what, failures, results, len(commands))
        return results

    @property
    def command_timeout_s(self) -> float:
        return self.settings.command_timeout_s

    # ------------------------------------------------------------ files

    def put(self, files: Mapping[str, Sequence[tuple[Path, str]]]) -> None:
        """Per host, copy (local file, remote path) pairs; parent directories are created.

        Each file arrives under a temporary name and is renamed into place, so a half-copied
        file is never seen under its real name; the local file's permission bits are kept.
        """
        for items in files.values():
            for local, _ in items:
                if not Path(local).is_file():
                    raise BadInputError(f"cannot copy {local}: no such file", fix="build the artifacts first")

        def on(name: str) -> Callable[[_Link], None]:
            return lambda link: self._put_on(link, files[name])

        self._parallel("copying files", {name: on(name) for name in files if files[name]})

    def _put_on(self, link: _Link, items: Sequence[tuple[Path, str]]) -> None:
        directories = sorted({posixpath.dirname(remote) for _, remote in items} - {"", "."})
        if directories:
            self._script(
                link, "creating directories", "mkdir -p -- " + " ".join(map(shlex.quote, directories))
            )
        token = uuid.uuid4().hex[:12]

        def send(conn: Connection) -> None:
            sftp = _open_sftp(conn, self.settings)
            try:
                for local, remote in items:
                    partial = f"{remote}.spike-part-{token}"
                    sftp.put(str(local), partial, confirm=True)
                    sftp.chmod(partial, stat.S_IMODE(os.stat(local).st_mode))
                    sftp.posix_rename(partial, remote)
            finally:
                sftp.close()

        self._on_host(link, f"copying {len(items)} file(s)", send)

    def ensure_bundle(
        self, local_tar: Path, digest: str, remote_root: str, hosts: Sequence[str] | None = None
    ) -> dict[str, bool]:
        """Make `<remote_root>/<digest>/` hold the extracted tar on every host; True where it was sent.

        Content-addressed: where `<digest>/.complete` exists nothing is sent, so an unchanged artifact
        is never pushed twice. Otherwise the tar goes to a temporary name, is extracted into
        `<digest>.tmp-XXXXXX`, gets `.complete` and is renamed into place in one step: a host never
        has a half-extracted `<digest>/`. `digest` must identify the tar's content.
        """
        _safe_name(digest, "bundle digest")
        if not Path(local_tar).is_file():
            raise BadInputError(f"bundle {local_tar} does not exist", fix="build the artifacts first")
        names = list(self._links) if hosts is None else list(hosts)
        marker = f"{remote_root}/{digest}/.complete"

        def ensure(link: _Link) -> bool:
            if self._exists(link, marker):
                return False
            self._push_bundle(link, Path(local_tar), digest, remote_root)
            return True

        return self._parallel(f"deploying bundle {digest}", dict.fromkeys(names, ensure))

    def _exists(self, link: _Link, remote_path: str) -> bool:
        def check(conn: Connection) -> bool:
            with link.shared_sftp(conn) as sftp:
                try:
                    sftp.stat(remote_path)
                except FileNotFoundError:
                    return False
                return True

        return self._on_host(link, f"checking {remote_path}", check)

    def _push_bundle(self, link: _Link, local_tar: Path, digest: str, remote_root: str) -> None:
        # One command receives the tar on stdin under a temporary name, checks its size, unpacks
        # and renames: one round trip, and faster than SFTP for large files with paramiko.
        tar_name = f".{digest}.tar.{uuid.uuid4().hex[:12]}"
        script = _unpack_script(remote_root, digest, tar_name, local_tar.stat().st_size)
        self._script(link, f"deploying bundle {digest}", script, stdin=local_tar)

    # ------------------------------------------------------------ detached processes

    def start_detached(self, name: str, command: str, *, workdir: str, log_name: str) -> None:
        """Start `command` in `workdir` so that it outlives this SSH session; returns once it runs.

        It runs in its own session and process group (setsid, nohup, stdin from /dev/null), with
        stdout and stderr in `workdir/log_name`. `<log_name>.pid` holds the process group id;
        `<log_name>.exit` appears (atomically) with the exit status when it ends, also after a TERM
        to the group. Safe to retry after a dropped connection: a launch token makes the second
        attempt a no-op instead of a second process.
        """
        self._start_detached(self._link(name), command, workdir, log_name)

    def start_detached_all(self, commands: Mapping[str, str], *, workdir: str, log_name: str) -> None:
        """start_detached on every named host at once ({name: command}); one error naming every failure."""

        def on(name: str) -> Callable[[_Link], None]:
            return lambda link: self._start_detached(link, commands[name], workdir, log_name)

        self._parallel(f"starting {log_name}", {name: on(name) for name in commands})

    def _start_detached(self, link: _Link, command: str, workdir: str, log_name: str) -> None:
        _safe_name(log_name, "log name")
        script = _launch_script(command, workdir, log_name, uuid.uuid4().hex[:16])
        self._script(link, f"starting `{_short(command)}` detached", script)

    def exit_status(self, name: str, workdir: str, log_name: str) -> int | None:
        """The detached command's exit status; None while it runs.

        KILLED_WITHOUT_STATUS (137) if its process group is gone without a recorded status
        (SIGKILL, OOM killer, reboot).
        """
        return self._exit_status(self._link(name), workdir, log_name)

    def exit_statuses(
        self, workdir: str, log_name: str, hosts: Sequence[str] | None = None
    ) -> dict[str, int | None]:
        """exit_status of every (named) host, asked in parallel: one poll of a whole fleet."""
        names = list(self._links) if hosts is None else list(hosts)
        return self._parallel(
            f"checking {log_name}",
            dict.fromkeys(names, lambda link: self._exit_status(link, workdir, log_name)),
        )

    def _exit_status(self, link: _Link, workdir: str, log_name: str) -> int | None:
        _safe_name(log_name, "log name")
        answer = self._script(link, f"checking {log_name}", _status_script(workdir, log_name)).stdout.split()
        if answer[:1] == ["running"]:
            return None
        if answer[:1] == ["lost"]:
            return KILLED_WITHOUT_STATUS
        if answer[:1] == ["exit"] and len(answer) == 2 and answer[1].lstrip("-").isdigit():
            return int(answer[1])
        raise link.error(
            f"no detached process {log_name!r} was started in {workdir} (answer: {' '.join(answer) or 'nothing'})",
            fix="start it with start_detached first; this is a bug in spike",
        )

    def signal(self, name: str, workdir: str, log_name: str, sig: str = "TERM") -> None:
        """Send `sig` to the detached command's whole process group; no error if it is gone.

        TERM (the JVM runs its shutdown hooks; exit_status then says 143) or KILL (exit_status says
        KILLED_WITHOUT_STATUS). Not INT: a shell starts background jobs with SIGINT ignored.
        """
        link = self._link(name)
        _safe_name(log_name, "log name")
        sig = sig.upper().removeprefix("SIG")
        if not _SIGNAL.fullmatch(sig):
            raise BadInputError(f"not a signal name: {sig!r}", fix="use TERM, INT, HUP, KILL or a number")
        self._script(link, f"sending SIG{sig} to {log_name}", _signal_script(workdir, log_name, sig))

    # ------------------------------------------------------------ reading back

    def read_from(self, name: str, remote_path: str, offset: int, limit: int = 8 << 20) -> bytes:
        """At most `limit` bytes of the file from `offset` on (b"" if it does not exist yet or has no more)."""
        link = self._link(name)

        def read(conn: Connection) -> bytes:
            with link.shared_sftp(conn) as sftp:
                try:
                    size = sftp.stat(remote_path).st_size or 0
                    if size <= offset:
                        return b""
                    length = min(limit, size - offset)
                    with sftp.open(remote_path, "rb") as handle:
                        return b"".join(handle.readv([(offset, length)]))
                except FileNotFoundError:
                    return b""

        return self._on_host(link, f"reading {remote_path}", read)

    def listdir(self, name: str, remote_dir: str) -> list[str]:
        """The names in a remote directory, sorted; [] if it does not exist."""
        link = self._link(name)

        def listing(conn: Connection) -> list[str]:
            with link.shared_sftp(conn) as sftp:
                try:
                    return sorted(sftp.listdir(remote_dir))
                except FileNotFoundError:
                    return []

        return self._on_host(link, f"listing {remote_dir}", listing)

    def fetch_tree(self, name: str, remote_dir: str, local_dir: Path) -> Path:
        """Copy a remote directory into local_dir (created) and return local_dir.

        The injector packs it (tar czf to a temporary file; simulation logs shrink a lot), one file
        travels, and it is unpacked here refusing absolute paths, `..`, links that leave local_dir
        and device files. The remote temporary file is removed.
        """
        link = self._link(name)
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        limit = self.command_timeout_s
        packed = self._command(
            link, f"packing {remote_dir}", _with_deadline(_pack_script(remote_dir), limit), limit
        )
        if packed.exit_code == 3:
            raise link.error(
                f"{remote_dir} does not exist on the host", fix="check the injector's results directory"
            )
        if packed.exit_code != 0 or not packed.stdout.strip():
            raise link.error(
                f"packing {remote_dir} failed (exit status {packed.exit_code}): {_tail(packed.stderr)}",
                fix="check free space in the host's temporary directory",
            )
        remote_tar = packed.stdout.strip().splitlines()[-1]
        with tempfile.TemporaryDirectory(prefix="spike-fetch-") as scratch:
            local_tar = Path(scratch) / "tree.tgz"

            def download(conn: Connection) -> None:
                sftp = _open_sftp(conn, self.settings)
                try:
                    sftp.get(remote_tar, str(local_tar))
                finally:
                    sftp.close()

            try:
                self._on_host(link, f"downloading {remote_dir}", download)
            finally:
                with contextlib.suppress(TransportError):
                    self._command(
                        link, "removing the packed copy", _shell(f"rm -f -- {shlex.quote(remote_tar)}"), 30
                    )
            try:
                with tarfile.open(local_tar, "r:gz") as archive:
                    archive.extractall(local_dir, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise link.error(
                    f"the copy of {remote_dir} could not be unpacked safely: {exc}",
                    fix="look at the directory on the host: it holds links or paths that leave it",
                ) from exc
        return local_dir

    # ------------------------------------------------------------ clocks

    def clock_offsets(self, samples: int = 8) -> dict[str, ClockSample]:
        """Each host's clock minus this machine's, from `samples` round trips per host (in parallel).

        One long-lived shell per host answers each newline with `date +%s%N`; the local wall clock
        at the middle of the round trip is compared with it, and the round trip with the smallest
        RTT wins (its error is at most RTT/2). The first answer is a warm-up and not used.
        """
        if samples < 1:
            raise BadInputError(f"samples must be at least 1, not {samples}")

        def measure(link: _Link) -> ClockSample:
            return self._on_host(
                link, "measuring the clock offset", lambda conn: self._probe_clock(conn, samples)
            )

        return self._parallel("measuring clock offsets", dict.fromkeys(self._links, measure))

    def _probe_clock(self, conn: Connection, samples: int) -> ClockSample:
        transport = conn.transport
        if transport is None or not transport.is_active():
            raise _Dropped(EOFError("the connection is closed"), sent=False)
        channel = transport.open_session(timeout=self.settings.connect_timeout_s)
        try:
            channel.settimeout(self.settings.command_timeout_s)
            channel.exec_command(_shell("while IFS= read -r _; do date +%s%N; done"))
            replies = channel.makefile("rb")
            best: tuple[int, float] | None = None  # (rtt ns, offset ns)
            for round_trip in range(samples + 1):
                wall_ns = time.time_ns()
                sent_ns = time.perf_counter_ns()
                channel.sendall(b"\n")
                line = replies.readline()
                rtt_ns = time.perf_counter_ns() - sent_ns
                if not line:
                    raise _Dropped(EOFError("the clock probe ended early"), sent=True)
                try:
                    remote_ns = int(line)
                except ValueError:
                    raise _Unusable(
                        f"the host's `date +%s%N` printed {line[:40]!r}, not nanoseconds",
                        fix="install GNU coreutils on the injector",
                    ) from None
                if round_trip == 0:
                    continue  # warm-up: the shell and `date` were not in memory yet
                offset_ns = remote_ns - (wall_ns + rtt_ns / 2)
                if best is None or rtt_ns < best[0]:
                    best = (rtt_ns, offset_ns)
            assert best is not None
            return ClockSample(offset_ms=best[1] / 1e6, rtt_ms=best[0] / 1e6)
        finally:
            channel.close()


# ---------------------------------------------------------------- scripts run on the hosts


def _launch_script(command: str, workdir: str, log_name: str, token: str) -> str:
    """The shell script behind start_detached (see there)."""
    # The wrapper is the process group leader. It traps TERM so that a TERM to the group ends the
    # command but not itself: POSIX shells run a trap only after the foreground command has
    # finished, so the wrapper then records the command's real status (143 after TERM).
    # INT does not work: shells start background jobs with SIGINT ignored, and that sticks.
    wrapper = (
        "trap : TERM\n"
        '/bin/sh -c "$2"\n'
        "status=$?\n"
        'echo "$status" > "$1.exit.tmp" && mv -f "$1.exit.tmp" "$1.exit"\n'
    )
    log = shlex.quote(log_name)
    marker = shlex.quote(f".{log_name}.launch-{token}")
    return (
        # Every external program costs the injector a fork and an exec: builtins where possible.
        f"[ -d {shlex.quote(workdir)} ] || mkdir -p -- {shlex.quote(workdir)} || exit 1\n"
        f"cd -- {shlex.quote(workdir)} || exit 1\n"
        'command -v setsid >/dev/null 2>&1 || { echo "setsid (util-linux) is missing" >&2; exit 1; }\n'
        # A retry of this very launch (same token) after a dropped connection must not start it twice.
        # (noclobber makes creating it fail if it exists; `command` keeps that failure from ending the shell)
        f"set -C; if ! command : 2>/dev/null > {marker}; then exit 0; fi; set +C\n"
        f"if [ -e {log}.exit ] || [ -e {log}.pid ]; then rm -f -- {log}.exit {log}.pid; fi\n"
        f"setsid nohup /bin/sh -c {shlex.quote(wrapper)} spike-detached {log} {shlex.quote(command)} "
        f"> {log} 2>&1 < /dev/null &\n"
        # A background job of a shell without job control is never a group leader, so setsid does
        # not fork: the job's pid becomes the new session's and process group's id. Written here,
        # before this returns, so exit_status and signal work right away.
        f"echo $! > {log}.pid\n"
    )


def _status_script(workdir: str, log_name: str) -> str:
    # Polled every few seconds per injector: builtins only, no process is started on the injector.
    log = shlex.quote(log_name)
    report_exit = f'if [ -f {log}.exit ]; then read -r code < {log}.exit; echo "exit $code"; exit 0; fi\n'
    return (
        f"cd -- {shlex.quote(workdir)} 2>/dev/null || {{ echo missing; exit 0; }}\n"
        + report_exit
        + f"[ -s {log}.pid ] || {{ echo missing; exit 0; }}\n"
        f"read -r pgid < {log}.pid\n"
        'case "$pgid" in ""|*[!0-9]*) echo missing; exit 0;; esac\n'
        # The leader itself (the wrapper, alive until the status is written) or anything left in
        # its group; the leader also counts in the instant before setsid() has made the group.
        "if kill -0 $pgid 2>/dev/null || kill -0 -$pgid 2>/dev/null; then echo running; exit 0; fi\n"
        # The wrapper writes .exit before it ends: look again now that the group is gone.
         + report_exit + "echo lost\n"
    )


def _signal_script(workdir: str, log_name: str, sig: str) -> str:
    log = shlex.quote(log_name)
    return (
        f"cd -- {shlex.quote(workdir)} 2>/dev/null || exit 0\n"
        f"[ -f {log}.exit ] && exit 0\n"
        f"[ -s {log}.pid ] || exit 0\n"
        f"read -r pgid < {log}.pid\n"
        'case "$pgid" in ""|*[!0-9]*) exit 0;; esac\n'
        # The leader alone only in the instant before setsid() has made the group.
        f"kill -{sig} -$pgid 2>/dev/null || kill -{sig} $pgid 2>/dev/null\n"
        "exit 0\n"
    )


def _unpack_script(remote_root: str, digest: str, tar_name: str, size: int) -> str:
    tar = shlex.quote(tar_name)
    return (
        f"[ -d {shlex.quote(remote_root)} ] || mkdir -p -- {shlex.quote(remote_root)} || exit 1\n"
        f"cd -- {shlex.quote(remote_root)} || exit 1\n"
        f"cat > {tar} || {{ rm -f -- {tar}; exit 1; }}\n"
        f"received=$(wc -c < {tar})\n"
        f'[ "$received" -eq {size} ] || {{ echo "received $received of {size} bytes" >&2; rm -f -- {tar}; exit 1; }}\n'
        f"if [ -f {digest}/.complete ]; then rm -f -- {tar}; exit 0; fi\n"
        f"tmp=$(mktemp -d {digest}.tmp-XXXXXX) || exit 1\n"
        f'if ! tar --no-same-owner -xf {tar} -C "$tmp"; then rm -rf -- "$tmp" {tar}; exit 1; fi\n'
        f'rm -f -- {tar}\n: > "$tmp/.complete"\n'
        f"if [ -e {digest} ]; then\n"
        f'  if [ -f {digest}/.complete ]; then rm -rf -- "$tmp"; exit 0; fi\n'
        f"  rm -rf -- {digest}\n"  # a leftover without .complete is never trusted
        "fi\n"
        f'mv -T -- "$tmp" {digest} || {{ rm -rf -- "$tmp"; exit 1; }}\n'
    )


def _pack_script(remote_dir: str) -> str:
    return (
        f"[ -d {shlex.quote(remote_dir)} ] || exit 3\n"
        'packed=$(mktemp "${TMPDIR:-/tmp}/spike-fetch.XXXXXX") || exit 1\n'
        # GNU tar exits 1 when a file changed while it was read: the copy is still usable.
        f'tar czf "$packed" -C {shlex.quote(remote_dir)} .\n'
        'rc=$?; if [ $rc -gt 1 ]; then rm -f -- "$packed"; exit $rc; fi\n'
        'echo "$packed"\n'
    )


def _fix_for(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "check the remote path's permissions for the SSH user"
    if isinstance(exc, FileNotFoundError):
        return "check the remote path"
    return "check the host and sshd's log"


def _combined(
    what: str, failures: Mapping[str, TransportError], results: Mapping[str, object], total: int
) -> TransportError:
    if len(failures) == 1:
        (only,) = failures.values()
        return TransportError(
            only.message, where=only.where, fix=only.fix, failures=failures, results=results
        )
    lines = [f"{what} failed on {len(failures)} of {total} injectors:"]
    for error in failures.values():
        lines.append(f"  - {error.where}: {error.message}")
        if error.fix:
            lines.append(f"      fix: {error.fix}")
    return TransportError(
        "\n".join(lines),
        where=", ".join(failures),
        fix="see each injector's fix above",
        failures=failures,
        results=results,
    )
