"""The SSH transport: what spike does on remote injectors, over one pinned SSH connection per host.

Remote providers (static SSH hosts, EC2 injectors) hand `SshFleet` their hosts; it deploys
artifacts (`put`, `ensure_bundle`), starts Gatling so that it survives the SSH session
(`start_detached`, optionally under a dead-man switch), polls it (`exit_status`, `read_from`),
stops it (`signal`), renews its lease (`renew_lease`), checks that nothing of a run is left
(`remains`), brings results home (`fetch_tree`) and measures clock offsets before a synchronized
start (`clock_offsets`). The connection layer is `connection`, the scripts run on the hosts are
`remote_scripts`.

Trust: a host is only ever accepted if its host key matches a pinned SHA256 fingerprint (see
`connection`): no `~/.ssh/config`, `known_hosts`, agent or default key files are consulted.

Threading model: one `fabric.Connection` per host, owned by a `Link` whose lock only guards
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
import os
import posixpath
import re
import shlex
import stat
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from fabric import Connection

from loadorch.errors import BadInputError
from loadorch.transport.connection import (
    CommandResult,
    Dropped,
    Link,
    Settings,
    SshHost,
    TimedOut,
    TransportError,
    Unusable,
    connect_failure,
    describe,
    exec_command,
    is_drop,
    open_sftp,
    short,
    tail,
    with_deadline,
)
from loadorch.transport.hostkeys import normalize_fingerprint
from loadorch.transport.remote_scripts import (
    LEASE_FILE,
    Deadman,
    launch_script,
    pack_script,
    parse_remains,
    remains_script,
    shell,
    signal_script,
    status_script,
    unpack_script,
)

__all__ = [
    "KILLED_WITHOUT_STATUS",
    "ClockSample",
    "CommandResult",
    "Deadman",
    "Remains",
    "SshFleet",
    "SshHost",
    "TransportError",
]

T = TypeVar("T")

#: What `exit_status` reports for a detached process that vanished without recording its status:
#: killed with SIGKILL (`signal(..., "KILL")`), by the OOM killer, or by a reboot (128 + 9).
KILLED_WITHOUT_STATUS = 137

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SIGNAL = re.compile(r"[A-Z][A-Z0-9]{0,15}|[0-9]{1,2}")


@dataclass(frozen=True)
class Remains:
    """What is left on a host of one working directory's detached processes (`SshFleet.remains`)."""

    groups: tuple[int, ...]  # process groups with a live process
    watchdog: int | None  # the dead-man watchdog's pid, if it still runs

    @property
    def gone(self) -> bool:
        return not self.groups and self.watchdog is None


@dataclass(frozen=True)
class ClockSample:
    """The host's clock minus this machine's, from the round trip with the smallest RTT.

    The true offset lies within offset_ms +/- rtt_ms / 2.
    """

    offset_ms: float
    rtt_ms: float


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
        self.settings = Settings(connect_timeout_s, command_timeout_s, keepalive_s)
        self.boot_wait_s = boot_wait_s
        self._links = {host.name: Link(host, self.settings) for host in hosts}
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

    def _link(self, name: str) -> Link:
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

    def _parallel(self, what: str, work: Mapping[str, Callable[[Link], T]]) -> dict[str, T]:
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
                    f"{what} failed: {describe(exc)}", fix="this is a bug in spike; rerun with --debug"
                )
        if failures:
            raise _combined(what, failures, results, len(work))
        return results

    def _on_host(
        self, link: Link, what: str, op: Callable[[Connection], T], *, retry_after_send: bool = True
    ) -> T:
        """op(connection), reconnecting once and retrying if the connection turns out to be dead.

        retry_after_send=False: a command that may already have run is not run a second time.
        """
        conn = link.connection()
        try:
            return self._attempt(link, conn, what, op)
        except Dropped as drop:
            if drop.sent and not retry_after_send:
                raise link.error(
                    f"the connection was lost while {what} ran ({describe(drop)}); "
                    "it may or may not have completed",
                    fix="check the host and run it again",
                ) from drop
            first = drop
        try:
            conn = link.reconnect(conn)
        except TransportError as exc:
            raise link.error(
                f"the connection was lost during {what} ({describe(first)}) and reconnecting failed: {exc.message}",
                fix=exc.fix,
            ) from exc
        try:
            return self._attempt(link, conn, what, op)
        except Dropped as drop:
            raise link.error(
                f"{what} failed again after reconnecting: {describe(drop)}",
                fix="check the host's network and sshd's log; the connection keeps dropping",
            ) from drop

    def _attempt(self, link: Link, conn: Connection, what: str, op: Callable[[Connection], T]) -> T:
        """op(conn); every failure but a dead connection (Dropped) becomes a TransportError naming the host."""
        try:
            return op(conn)
        except (TransportError, Dropped):
            raise
        except TimedOut:
            # A connection that let a deadline pass may be silently dead (paramiko's keepalives do
            # not notice): the next operation starts on a fresh one.
            link.forget(conn)
            raise link.error(
                f"{what} did not finish within its time limit; it was stopped",
                fix="raise timeout_s if it is just slow, or find out on the host why it hangs",
            ) from None
        except Unusable as exc:
            raise link.error(f"{what} failed: {exc}", fix=exc.fix) from exc
        except Exception as exc:
            if is_drop(exc, conn):
                raise Dropped(exc, sent=True) from exc
            raise link.error(f"{what} failed: {describe(exc)}", fix=_fix_for(exc)) from exc

    def _command(
        self,
        link: Link,
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
            lambda conn: exec_command(conn, remote_command, timeout_s, open_timeout, stdin),
            retry_after_send=retry_after_send,
        )

    def _script(self, link: Link, what: str, script: str, stdin: Path | None = None) -> CommandResult:
        """One of spike's own scripts (safe to run again); a non-zero exit is an error naming the host.

        Without the host-side `timeout` of `run`: these scripts only touch files, and every process
        they start costs the injector CPU (our own deadline still applies).
        """
        result = self._command(link, what, shell(script), self.settings.command_timeout_s, stdin=stdin)
        if result.exit_code != 0:
            raise link.error(
                f"{what} failed with exit status {result.exit_code}: {tail(result.stderr) or '(no output)'}",
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

    def _connect_link(self, link: Link, deadline: float) -> None:
        auth_deadline = min(deadline, time.monotonic() + 30.0)
        delay = 0.2
        while True:
            try:
                link.install(link.open_once())
                return
            except TransportError:
                raise
            except Exception as exc:
                failure = connect_failure(link.host, exc, self.settings.connect_timeout_s)
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
        what = f"`{short(command)}`" if isinstance(command, str) else "the command"

        def on(name: str) -> Callable[[Link], CommandResult]:
            return lambda link: self._command(
                link,
                f"`{short(commands[name])}`",
                with_deadline(commands[name], limit),
                limit,
                retry_after_send=idempotent,
            )

        results = self._parallel(what, {name: on(name) for name in commands})
        if check:
            failed = {name: result for name, result in results.items() if result.exit_code != 0}
            if failed:
                failures = {
                    name: self._links[name].error(
                        f"`{short(commands[name])}` exited with status {result.exit_code}: "
                        f"{tail(result.stderr) or tail(result.stdout) or '(no output)'}",
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

        def on(name: str) -> Callable[[Link], None]:
            return lambda link: self._put_on(link, files[name])

        self._parallel("copying files", {name: on(name) for name in files if files[name]})

    def _put_on(self, link: Link, items: Sequence[tuple[Path, str]]) -> None:
        directories = sorted({posixpath.dirname(remote) for _, remote in items} - {"", "."})
        if directories:
            self._script(
                link, "creating directories", "mkdir -p -- " + " ".join(map(shlex.quote, directories))
            )
        token = uuid.uuid4().hex[:12]

        def send(conn: Connection) -> None:
            sftp = open_sftp(conn, self.settings)
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

        def ensure(link: Link) -> bool:
            if self._exists(link, marker):
                return False
            self._push_bundle(link, Path(local_tar), digest, remote_root)
            return True

        return self._parallel(f"deploying bundle {digest}", dict.fromkeys(names, ensure))

    def _exists(self, link: Link, remote_path: str) -> bool:
        def check(conn: Connection) -> bool:
            with link.shared_sftp(conn) as sftp:
                try:
                    sftp.stat(remote_path)
                except FileNotFoundError:
                    return False
                return True

        return self._on_host(link, f"checking {remote_path}", check)

    def _push_bundle(self, link: Link, local_tar: Path, digest: str, remote_root: str) -> None:
        # One command receives the tar on stdin under a temporary name, checks its size, unpacks
        # and renames: one round trip, and faster than SFTP for large files with paramiko.
        tar_name = f".{digest}.tar.{uuid.uuid4().hex[:12]}"
        script = unpack_script(remote_root, digest, tar_name, local_tar.stat().st_size)
        self._script(link, f"deploying bundle {digest}", script, stdin=local_tar)

    # ------------------------------------------------------------ detached processes

    def start_detached(
        self, name: str, command: str, *, workdir: str, log_name: str, deadman: Deadman | None = None
    ) -> None:
        """Start `command` in `workdir` so that it outlives this SSH session; returns once it runs.

        It runs in its own session and process group (setsid, nohup, stdin from /dev/null), with
        stdout and stderr in `workdir/log_name`. `<log_name>.pid` holds the process group id;
        `<log_name>.exit` appears (atomically) with the exit status once every process of the
        group has ended, also after a TERM to the group (a command that drains on TERM is done
        when its status appears). Safe to retry after a dropped connection: a launch token makes
        the second attempt a no-op instead of a second process.

        With `deadman`, the group is put under the working directory's dead-man switch: unless
        `renew_lease` keeps the lease fresh, a watchdog on the host stops it (see `Deadman`).
        """
        self._start_detached(self._link(name), command, workdir, log_name, deadman)

    def start_detached_all(
        self,
        commands: Mapping[str, str],
        *,
        workdir: str,
        log_name: str,
        deadman: Deadman | None = None,
    ) -> None:
        """start_detached on every named host at once ({name: command}); one error naming every failure."""

        def on(name: str) -> Callable[[Link], None]:
            return lambda link: self._start_detached(link, commands[name], workdir, log_name, deadman)

        self._parallel(f"starting {log_name}", {name: on(name) for name in commands})

    def _start_detached(
        self, link: Link, command: str, workdir: str, log_name: str, deadman: Deadman | None
    ) -> None:
        _safe_name(log_name, "log name")
        script = launch_script(command, workdir, log_name, uuid.uuid4().hex[:16], deadman)
        self._script(link, f"starting `{short(command)}` detached", script)

    def renew_lease(self, name: str, workdir: str, stamp: str) -> None:
        """Rewrite the dead-man lease in `workdir` with `stamp` (which must differ from the last one).

        Over the connection's SFTP session: no process is started on the injector. The watchdog
        only compares the file with what it saw before, on the host's clocks.
        """
        link = self._link(name)
        path = f"{workdir}/{LEASE_FILE}"

        def write(conn: Connection) -> None:
            with link.shared_sftp(conn) as sftp, sftp.open(path, "w") as handle:
                handle.write(stamp.encode() + b"\n")

        self._on_host(link, "renewing the lease", write)

    def remains(self, name: str, workdir: str, log_names: Sequence[str] = ()) -> Remains:
        """What is left on the host of the detached processes started in `workdir`.

        Every process group the dead-man switch registered there, and those of `log_names`, is
        checked with `kill -0`; the watchdog is given a few seconds to leave once they are gone.
        """
        link = self._link(name)
        for log_name in log_names:
            _safe_name(log_name, "log name")
        script = remains_script(workdir, tuple(log_names), settle_s=3.0)
        answer = self._script(link, "checking what is left of the run", script).stdout
        parsed = parse_remains(answer)
        if parsed is None:
            raise link.error(
                f"the check of what is left in {workdir} answered {tail(answer)!r}",
                fix="this is a bug in spike: please report it with the host's /bin/sh",
            )
        return Remains(groups=parsed[0], watchdog=parsed[1])

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

    def _exit_status(self, link: Link, workdir: str, log_name: str) -> int | None:
        _safe_name(log_name, "log name")
        answer = self._script(link, f"checking {log_name}", status_script(workdir, log_name)).stdout.split()
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
        self._script(link, f"sending SIG{sig} to {log_name}", signal_script(workdir, log_name, sig))

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
            link, f"packing {remote_dir}", with_deadline(pack_script(remote_dir), limit), limit
        )
        if packed.exit_code == 3:
            raise link.error(
                f"{remote_dir} does not exist on the host", fix="check the injector's results directory"
            )
        if packed.exit_code != 0 or not packed.stdout.strip():
            raise link.error(
                f"packing {remote_dir} failed (exit status {packed.exit_code}): {tail(packed.stderr)}",
                fix="check free space in the host's temporary directory",
            )
        remote_tar = packed.stdout.strip().splitlines()[-1]
        with tempfile.TemporaryDirectory(prefix="spike-fetch-") as scratch:
            local_tar = Path(scratch) / "tree.tgz"

            def download(conn: Connection) -> None:
                sftp = open_sftp(conn, self.settings)
                try:
                    sftp.get(remote_tar, str(local_tar))
                finally:
                    sftp.close()

            try:
                self._on_host(link, f"downloading {remote_dir}", download)
            finally:
                with contextlib.suppress(TransportError):
                    self._command(
                        link, "removing the packed copy", shell(f"rm -f -- {shlex.quote(remote_tar)}"), 30
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

        def measure(link: Link) -> ClockSample:
            return self._on_host(
                link, "measuring the clock offset", lambda conn: self._probe_clock(conn, samples)
            )

        return self._parallel("measuring clock offsets", dict.fromkeys(self._links, measure))

    def _probe_clock(self, conn: Connection, samples: int) -> ClockSample:
        transport = conn.transport
        if transport is None or not transport.is_active():
            raise Dropped(EOFError("the connection is closed"), sent=False)
        channel = transport.open_session(timeout=self.settings.connect_timeout_s)
        try:
            channel.settimeout(self.settings.command_timeout_s)
            channel.exec_command(shell("while IFS= read -r _; do date +%s%N; done"))
            replies = channel.makefile("rb")
            best: tuple[int, float] | None = None  # (rtt ns, offset ns)
            for round_trip in range(samples + 1):
                wall_ns = time.time_ns()
                sent_ns = time.perf_counter_ns()
                channel.sendall(b"\n")
                line = replies.readline()
                rtt_ns = time.perf_counter_ns() - sent_ns
                if not line:
                    raise Dropped(EOFError("the clock probe ended early"), sent=True)
                try:
                    remote_ns = int(line)
                except ValueError:
                    raise Unusable(
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
