"""The scripts spike runs on injectors, as text: rendered here, run by `ssh.SshFleet`.

Pure: nothing here opens a connection, so the rendering is unit-tested without a host. Every
script runs under `/bin/sh` (dash on Debian, busybox or bash elsewhere: POSIX only) and prefers
builtins, because every external program costs the injector a fork and an exec.

The dead-man switch (`Deadman`) lives here too: a small Python watchdog, shipped inside the launch
script, that stops a run's processes on a host when the orchestrator stops renewing the run's
lease there (see `WATCHDOG_PY`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

#: Files of the dead-man switch, in the detached processes' working directory.
LEASE_FILE = "deadman.lease"  # rewritten by the orchestrator every few seconds
GROUPS_FILE = "deadman.groups"  # process group ids of every detached process, one a line
WATCHDOG_PID_FILE = "deadman.pid"  # the running watchdog's pid
DEADMAN_LOG = "deadman.log"  # what the watchdog did, and why
WATCHDOG_FILE = ".deadman.py"
#: The first words of the line the watchdog writes when it stops a run (recovery looks for them).
EXPIRED_MARK = "lease expired"


@dataclass(frozen=True, kw_only=True)
class Deadman:
    """A dead-man switch for detached processes: stop them unless the lease is renewed.

    A watchdog on the host (started with the first detached process in a working directory)
    stops every process group started there with SIGTERM, then SIGKILL after `grace_s`, once
    `deadman.lease` has not changed for `expires_s`, writes why into `deadman.log` and exits; it
    also exits by itself once those processes are gone.

    Age is measured on the host's monotonic clock, from the moment the watchdog last saw the
    lease file change: no clock offset between this machine and the host, and no step of the
    host's wall clock, can make a lease look fresher or older than it is.
    """

    python: str = "python3"
    expires_s: float = 30.0
    grace_s: float = 10.0

    @property
    def check_s(self) -> float:
        """How often the watchdog looks: a tenth of the expiry, at most once a second."""
        return round(min(1.0, self.expires_s / 10), 3)


def shell(script: str) -> str:
    """Run `script` under /bin/sh whatever the login shell is."""
    return f"exec /bin/sh -c {shlex.quote(script)}"


# The wrapper is the process group leader. It traps TERM so that a TERM to the group ends the
# command but not itself: POSIX shells run a trap only after the foreground command has finished,
# so the wrapper then records the command's real status (143 after TERM). INT does not work:
# shells start background jobs with SIGINT ignored, and that sticks.
#
# The status is written only once no other process of the group is left: a TERM to the group
# also ends the `sh -c` between the wrapper and the command, and a command that handles TERM
# (the agent drains its last points) would otherwise still be working when its status appears.
# The group's members are read from /proc with builtins only (field 5 of /proc/PID/stat, after
# the command name in parentheses, which may hold anything). A `sleep` without fractions (some
# busybox builds) sleeps a whole second instead.
_WRAPPER = """\
trap : TERM
others() {
  for stat in /proc/[0-9]*/stat; do
    [ "$stat" = "/proc/$$/stat" ] && continue
    read -r line 2>/dev/null < "$stat" || continue
    set -- ${line##*) }
    [ "$3" = "$$" ] && [ "$1" != Z ] && return 0
  done
  return 1
}
/bin/sh -c "$2"
status=$?
if [ -r /proc/$$/stat ]; then while others; do sleep 0.1 2>/dev/null || sleep 1; done; fi
echo "$status" > "$1.exit.tmp" && mv -f "$1.exit.tmp" "$1.exit"
"""


# `group_live PGID`: does the process group have a live member? kill -0 also answers for a zombie
# (init may take its time to reap one), so where there is a /proc it decides (builtins only).
_GROUP_LIVE = """\
group_live() {
  kill -0 -"$1" 2>/dev/null || kill -0 "$1" 2>/dev/null || return 1
  [ -r /proc/self/stat ] || return 0
  for stat in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$stat" || continue
    set -- "$1" ${line##*) }
    [ "$4" = "$1" ] && [ "$2" != Z ] && return 0
  done
  return 1
}
"""
# `pid_live PID`: the same for one process.
_PID_LIVE = """\
pid_live() {
  if read -r line 2>/dev/null < "/proc/$1/stat"; then set -- ${line##*) }; [ "$1" != Z ]; return; fi
  [ -r /proc/self/stat ] && return 1
  kill -0 "$1" 2>/dev/null
}
"""


def launch_script(
    command: str, workdir: str, log_name: str, token: str, deadman: Deadman | None = None
) -> str:
    """The shell script behind `SshFleet.start_detached` (see there)."""
    log = shlex.quote(log_name)
    marker = shlex.quote(f".{log_name}.launch-{token}")
    script = (
        f"[ -d {shlex.quote(workdir)} ] || mkdir -p -- {shlex.quote(workdir)} || exit 1\n"
        f"cd -- {shlex.quote(workdir)} || exit 1\n"
        'command -v setsid >/dev/null 2>&1 || { echo "setsid (util-linux) is missing" >&2; exit 1; }\n'
        # A retry of this very launch (same token) after a dropped connection must not start it twice.
        # (noclobber makes creating it fail if it exists; `command` keeps that failure from ending the shell)
        f"set -C; if ! command : 2>/dev/null > {marker}; then exit 0; fi; set +C\n"
        f"if [ -e {log}.exit ] || [ -e {log}.pid ]; then rm -f -- {log}.exit {log}.pid; fi\n"
    )
    if deadman is not None:
        # nothing starts unless its watchdog can
        script += (
            f"command -v {shlex.quote(deadman.python)} >/dev/null 2>&1 || "
            f"{{ echo {shlex.quote(deadman.python + ' is missing: the dead-man watchdog needs Python 3')} >&2; "
            "exit 1; }\n"
            # renewed before anything starts: the watchdog counts from the moment it first looks
            f"echo launch {shlex.quote(token)} > {LEASE_FILE}\n"
        )
    script += (
        f"setsid nohup /bin/sh -c {shlex.quote(_WRAPPER)} spike-detached {log} {shlex.quote(command)} "
        f"> {log} 2>&1 < /dev/null &\n"
        # A background job of a shell without job control is never a group leader, so setsid does
        # not fork: the job's pid becomes the new session's and process group's id. Written here,
        # before this returns, so exit_status and signal work right away.
        "pgid=$!\n"
        f"echo $pgid > {log}.pid\n"
    )
    if deadman is not None:
        script += _watchdog_start(deadman)
    return script


def _watchdog_start(deadman: Deadman) -> str:
    """Register the new group with the watchdog, starting one unless it runs already."""
    args = " ".join(f"{value:g}" for value in (deadman.expires_s, deadman.grace_s, deadman.check_s))
    return (
        f"echo $pgid >> {GROUPS_FILE}\n"
        + _PID_LIVE
        + f"if [ -s {WATCHDOG_PID_FILE} ] && read -r watchdog < {WATCHDOG_PID_FILE} && "
        'case "$watchdog" in ""|*[!0-9]*) false;; esac && pid_live "$watchdog"; then exit 0; fi\n'
        f"cat > {WATCHDOG_FILE}.$$ <<'SPIKE_DEADMAN_EOF' && mv -f {WATCHDOG_FILE}.$$ {WATCHDOG_FILE} || exit 1\n"
        f"{WATCHDOG_PY}"
        "SPIKE_DEADMAN_EOF\n"
        f"setsid nohup {shlex.quote(deadman.python)} {WATCHDOG_FILE} {args} "
        f">> {DEADMAN_LOG} 2>&1 < /dev/null &\n"
        # at once, so that the next launch finds it even before Python has started
        f"echo $! > {WATCHDOG_PID_FILE}\n"
    )


# The watchdog: started detached (its own session, so a signal to the run's groups never reaches
# it), in the run's working directory. One per directory (deadman.pid, created exclusively).
WATCHDOG_PY = '''\
"""spike's dead-man switch: stop this directory's detached processes when the lease goes stale."""
import os, signal, sys, time

LEASE, GROUPS, PIDFILE = "deadman.lease", "deadman.groups", "deadman.pid"


def log(message):
    print(time.strftime("%Y-%m-%dT%H:%M:%S%z"), "deadman[%d]:" % os.getpid(), message, flush=True)


def live_groups(candidates):
    """The process groups among `candidates` with a live member (zombies do not count)."""
    live = set()
    for pgid in candidates:
        try:
            os.killpg(pgid, 0)
            live.add(pgid)
        except ProcessLookupError:
            pass
        except PermissionError:
            live.add(pgid)
    if not live or not os.path.isdir("/proc/self"):
        return live
    # a zombie answers kill(); init may take its time to reap one
    busy = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, "rb") as handle:
                    fields = handle.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if len(fields) > 2 and fields[0] != b"Z" and fields[2].isdigit():
                busy.add(int(fields[2]))
    return live & busy


def groups():
    try:
        with open(GROUPS) as handle:
            return {int(word) for word in handle.read().split() if word.isdigit() and int(word) > 1}
    except OSError:
        return set()


def lease():
    try:
        with open(LEASE, "rb") as handle:
            return os.fstat(handle.fileno()).st_mtime_ns, handle.read(256)
    except OSError:
        return None


def claim():
    """Become the directory's watchdog, unless another live one is there already."""
    for _ in range(3):
        try:
            with open(PIDFILE) as handle:
                other = int(handle.read().split()[0])
        except FileNotFoundError:
            other = None
        except (OSError, ValueError, IndexError):
            other = 0
        if other == os.getpid():
            return True  # the launcher wrote it for us
        if other is not None and other > 1:
            try:
                os.kill(other, 0)
                return False
            except ProcessLookupError:
                pass
            except PermissionError:
                return False
        if other is not None:
            try:
                os.unlink(PIDFILE)
            except OSError:
                pass
        try:
            fd = os.open(PIDFILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.write(fd, b"%d\\n" % os.getpid())
        os.close(fd)
        return True
    return False


def release(gone):
    """Give up the directory; False if a group was registered meanwhile (and we watch on)."""
    try:
        os.unlink(PIDFILE)
    except OSError:
        pass
    if not live_groups(groups() - gone):
        return True
    return not claim()


def stop(live, age, expires_s, grace_s):
    log("lease expired: %s not renewed for %.1f s (limit %g s): the orchestrator died or lost this "
        "host; SIGTERM to process group(s) %s" % (LEASE, age, expires_s, " ".join(map(str, sorted(live)))))
    for pgid in live:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and live_groups(live):
        time.sleep(0.1)
    left = sorted(live_groups(live))
    if left:
        log("still running after %g s: SIGKILL to process group(s) %s" % (grace_s, " ".join(map(str, left))))
        for pgid in left:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and live_groups(set(left)):
            time.sleep(0.1)
    left = sorted(live_groups(live))
    log("stopped the run's processes" if not left else "could not stop process group(s) %s" % left)


def main(argv):
    expires_s, grace_s, check_s = (float(arg) for arg in argv[1:4])
    if not claim():
        return 0
    log("watching process group(s) %s: stopped if %s is not renewed for %g s"
        % (" ".join(map(str, sorted(groups()))), LEASE, expires_s))
    gone = set()
    mark, renewed = lease(), time.monotonic()
    while True:
        known = groups() - gone
        live = live_groups(known)
        gone |= known - live
        if not live:
            if release(gone):
                log("every process of the run is gone; exiting")
                return 0
            continue
        now, current = time.monotonic(), lease()
        if current != mark:
            mark, renewed = current, now
        elif now - renewed > expires_s:
            stop(live, now - renewed, expires_s, grace_s)
            release(gone | live)
            return 0
        time.sleep(check_s)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def status_script(workdir: str, log_name: str) -> str:
    """`exit N`, `running`, `lost` (the group is gone without a status) or `missing`."""
    # Polled every second or so per injector: builtins only, no process is started on the injector.
    log = shlex.quote(log_name)
    report_exit = f'if [ -f {log}.exit ]; then read -r code < {log}.exit; echo "exit $code"; exit 0; fi\n'
    return (
        f"cd -- {shlex.quote(workdir)} 2>/dev/null || {{ echo missing; exit 0; }}\n"
        + report_exit
        + f"[ -s {log}.pid ] || {{ echo missing; exit 0; }}\n"
        f"read -r pgid < {log}.pid\n"
        'case "$pgid" in ""|*[!0-9]*) echo missing; exit 0;; esac\n'
        # The leader (the wrapper, alive until the status is written) is one read away; only once
        # it has gone is the rest of its group looked for. The leader also counts in the instant
        # before setsid() has made the group.
        'if read -r line 2>/dev/null < "/proc/$pgid/stat"; then\n'
        '  set -- ${line##*) }; [ "$1" != Z ] && { echo running; exit 0; }\n'
        "elif kill -0 $pgid 2>/dev/null; then echo running; exit 0; fi\n"
        + _GROUP_LIVE
        + 'if group_live "$pgid"; then echo running; exit 0; fi\n'
        # The wrapper writes .exit before it ends: look again now that the group is gone.
        + report_exit
        + "echo lost\n"
    )


def signal_script(workdir: str, log_name: str, sig: str) -> str:
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


def remains_script(workdir: str, log_names: tuple[str, ...], settle_s: float) -> str:
    """Which of the directory's process groups still run, and whether its watchdog does.

    Prints `groups PGID...` and `watchdog PID` (or `watchdog -`). Once no group is left the
    watchdog has nothing to guard and leaves within a second; it is given `settle_s` to do so.
    """
    pid_files = " ".join(shlex.quote(f"{name}.pid") for name in log_names)
    polls = max(1, round(settle_s / 0.1))
    return (
        f"cd -- {shlex.quote(workdir)} 2>/dev/null || {{ echo groups; echo watchdog -; exit 0; }}\n"
        + _GROUP_LIVE
        + _PID_LIVE
        + "alive=\n"
        f"for file in {GROUPS_FILE} {pid_files}; do\n"
        '  [ -f "$file" ] || continue\n'
        "  while read -r pgid; do\n"
        '    case "$pgid" in ""|*[!0-9]*) continue;; esac\n'
        '    case " $alive " in *" $pgid "*) continue;; esac\n'
        '    if group_live "$pgid"; then alive="$alive $pgid"; fi\n'
        '  done < "$file"\n'
        "done\n"
        'echo "groups$alive"\n'
        "watchdog=-\n"
        f"if [ -s {WATCHDOG_PID_FILE} ] && read -r pid < {WATCHDOG_PID_FILE}; then\n"
        '  case "$pid" in ""|*[!0-9]*) ;; *)\n'
        '    i=0; while pid_live "$pid"; do\n'
        f'      [ -n "$alive" ] || [ $i -ge {polls} ] && {{ watchdog=$pid; break; }}\n'
        "      i=$((i + 1)); sleep 0.1 2>/dev/null || sleep 1\n"
        "    done;;\n"
        "  esac\n"
        "fi\n"
        'echo "watchdog $watchdog"\n'
    )


def parse_remains(answer: str) -> tuple[tuple[int, ...], int | None] | None:
    """remains_script's answer as (live process groups, live watchdog pid); None if garbled."""
    lines = dict(line.partition(" ")[::2] for line in answer.strip().splitlines() if line.strip())
    if "groups" not in lines or "watchdog" not in lines:
        return None
    words = lines["groups"].split()
    watchdog = lines["watchdog"].strip()
    if not all(w.isdigit() for w in words) or not (watchdog == "-" or watchdog.isdigit()):
        return None
    return tuple(int(w) for w in words), None if watchdog == "-" else int(watchdog)


def unpack_script(remote_root: str, digest: str, tar_name: str, size: int) -> str:
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


def pack_script(remote_dir: str) -> str:
    return (
        f"[ -d {shlex.quote(remote_dir)} ] || exit 3\n"
        'packed=$(mktemp "${TMPDIR:-/tmp}/spike-fetch.XXXXXX") || exit 1\n'
        # GNU tar exits 1 when a file changed while it was read: the copy is still usable.
        f'tar czf "$packed" -C {shlex.quote(remote_dir)} .\n'
        'rc=$?; if [ $rc -gt 1 ]; then rm -f -- "$packed"; exit $rc; fi\n'
        'echo "$packed"\n'
    )
