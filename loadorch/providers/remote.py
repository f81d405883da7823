"""Injectors on SSH hosts: the deploy, run and collect path shared by `static` and `aws`.

The subclass decides where the hosts come from (an inventory file, or Terraform); this class
does the rest over one pinned SSH connection per host (`loadorch.transport.ssh`):

- deploy: Gatling's jars, the compiled simulation, the feeders and the agent zipapp go to a
  content-addressed cache on each host (`<base>/cache/<kind>/<digest>/`), so an unchanged
  artifact is never sent twice; each injector gets `<base>/runs/<run_id>/<injector>/`.
- run: Gatling and the agent are started detached (they survive a dropped SSH session) and
  polled; every second `sync` appends what the injector's files gained to their mirrors in the
  run directory, so the orchestrator reads a remote injector exactly like a local one.
- collect: the results folder is compressed on the injector and fetched before teardown.
- dead-man switch: every detached process is started under a lease (`Deadman`); a thread of the
  provider renews it on every host every `LEASE_RENEW_S`, and a watchdog on the host stops the
  run's processes once it is `LEASE_EXPIRES_S` old, so a spike that is killed (or loses a host
  for good) never leaves load running against the target.
- teardown: stops every process, then checks on each host that none of the run's processes is
  left; the report is clean only when every host said so.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from loadorch.atomic import write_atomic
from loadorch.errors import InjectorError, SpikeError
from loadorch.pacing import ticking
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.process import Command
from loadorch.providers.base import Artifacts, ClockCheck, InjectorHandle, InjectorSite, TeardownReport
from loadorch.providers.bundles import tar_bundle, tar_tree
from loadorch.providers.lease import DEADMAN_GRACE_S, LeaseKeeper, lease_timings
from loadorch.run.layout import RunLayout
from loadorch.transport.remote_scripts import DEADMAN_LOG, EXPIRED_MARK, Deadman
from loadorch.transport.ssh import SshFleet, SshHost

STATUS_FILE = "agent-status.json"
# files appended to their local mirror every second (the results' simulation.log is found on the way)
TAILED = ("console.log", "agent.log", "agent-tap.lp")


@dataclass(frozen=True)
class RemoteHost:
    """An injector host, however it came to exist."""

    ssh: SshHost  # ssh.name is the injector id
    region: str
    base_dir: str = "/var/tmp/spike"
    java: str = "java"
    python: str = "python3"


@dataclass
class _Mirror:
    """What has been copied of one remote file so far."""

    remote: str
    local: Path
    offset: int = 0


@dataclass
class RemoteInjector:
    """A process (Gatling or the agent) started detached on an SSH host."""

    fleet: SshFleet
    injector_id: str
    remote_workdir: str
    log_name: str
    local_workdir: Path
    exit_code: int | None = None

    def poll(self) -> int | None:
        # refreshed by the provider's `sync`, once a second: polling costs no round trip
        return self.exit_code

    def refresh(self) -> None:
        if self.exit_code is None:
            self.exit_code = self.fleet.exit_status(self.injector_id, self.remote_workdir, self.log_name)

    def stop(self, grace_s: float) -> None:
        with contextlib.suppress(SpikeError):
            self.refresh()
        if self.exit_code is not None:
            return
        try:
            self.fleet.signal(self.injector_id, self.remote_workdir, self.log_name, "TERM")
        except SpikeError:
            return  # the host cannot be reached: its dead-man watchdog stops the process
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with contextlib.suppress(SpikeError):
                self.refresh()
            if self.exit_code is not None:
                return
            time.sleep(0.2)
        with contextlib.suppress(SpikeError):
            self.fleet.signal(self.injector_id, self.remote_workdir, self.log_name, "KILL")
            time.sleep(0.2)
            self.refresh()

    def results_dir(self) -> Path:
        return self.local_workdir / "results"


def teardown_summary(
    started: Sequence[str],
    running: Mapping[str, str],
    unverified: Mapping[str, str],
    *,
    lease_expires_s: float,
    grace_s: float,
) -> tuple[str, bool]:
    """What teardown found on the hosts, and whether that is clean.

    `started`: the injectors where something was started; `running`: injector -> what is still
    alive there after the stop; `unverified`: injector -> why it could not be checked. Clean only
    when every host was checked and had nothing left.
    """
    if not started:
        return "nothing was started", True
    parts = []
    checked = [name for name in started if name not in running and name not in unverified]
    if checked:
        parts.append(
            f"no process of the run is left on {len(checked)} of {len(started)} SSH injector(s) "
            "(checked on each host)"
        )
    backstop = (
        f"the lease stops them: its watchdog ends the run's processes {lease_expires_s:g} s after "
        f"the last renewal (SIGKILL {grace_s:g} s later)"
    )
    for name in sorted(running):
        parts.append(f"still running on {name}: {running[name]}; {backstop}")
    for name in sorted(unverified):
        parts.append(f"unverified: {name}: {unverified[name]}; {backstop}")
    return "; ".join(parts), not running and not unverified


@dataclass
class _InjectorState:
    host: RemoteHost
    workdir: str
    local: Path
    mirrors: list[_Mirror] = field(default_factory=list)
    handles: list[RemoteInjector] = field(default_factory=list)
    simulation_log: bool = False
    unreachable_since: float | None = None
    last_error: str | None = None


class SshFleetProvider:
    """Base of the SSH providers; subclasses implement `_hosts(plan, run_dir)` and may extend teardown."""

    name = "ssh"
    extra_lead_s = 0.5  # the go file travels to every host over SSH
    parallel_launch = True  # one round trip per host: done for all hosts at once
    boot_wait_s = 0.0  # how long hosts may still refuse SSH (instances booting)
    checks_target_from_injectors = True  # what this machine cannot reach, the injectors may

    def __init__(
        self,
        *,
        cache_dir: Path,
        connect_timeout_s: float = 10.0,
        keepalive_s: float = 5.0,
        lease_renew_s: float | None = None,
        lease_expires_s: float | None = None,
        deadman_grace_s: float = DEADMAN_GRACE_S,
    ) -> None:
        """`lease_renew_s`/`lease_expires_s`: None reads SPIKE_LEASE_RENEW_S/SPIKE_LEASE_EXPIRES_S
        from the environment, else LEASE_RENEW_S/LEASE_EXPIRES_S."""
        self.cache_dir = cache_dir
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.lease_renew_s, self.lease_expires_s = lease_timings(lease_renew_s, lease_expires_s)
        self.deadman_grace_s = deadman_grace_s
        self.fleet: SshFleet | None = None
        self.states: dict[str, _InjectorState] = {}
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="spike-sync")
        self.deploy_report: dict[str, object] = {}
        self._teardown_notes: list[str] = []
        self._lease: LeaseKeeper | None = None
        self._lease_lock = threading.Lock()
        self._torn_down = False
        # (where, event, detail): what a long phase is doing, at least every 10 s
        self.say: Callable[[str, str, str], None] = lambda where, event, detail: None
        self._leftovers: dict[str, str] = {}  # injector -> what is still running after teardown
        self._unverified: dict[str, str] = {}  # injector -> why teardown could not check it
        self._deadman_fired: dict[str, str] = {}  # injector -> what its watchdog wrote

    @property
    def lost_after_s(self) -> float:
        """An injector unreachable this long after its last lease renewal has been stopped by its
        watchdog (if it is up at all): it is given up as failed; its results may still be fetched."""
        return self.lease_expires_s + self.deadman_grace_s + self.lease_renew_s

    # -- what subclasses provide ---------------------------------------------------------------

    def _hosts(self, plan: Plan, run_dir: Path) -> dict[str, RemoteHost]:
        """One host per injector of the plan (key: injector id)."""
        raise NotImplementedError

    # -- Provider ------------------------------------------------------------------------------

    def provision(self, plan: Plan, run_dir: Path) -> None:
        hosts = self._hosts(plan, run_dir)
        self.fleet = SshFleet(
            [h.ssh for h in hosts.values()],
            connect_timeout_s=self.connect_timeout_s,
            keepalive_s=self.keepalive_s,
            boot_wait_s=self.boot_wait_s,
        )
        count = len(hosts)
        self.say("fleet", "ssh", f"connecting to {count} host(s)")
        with ticking(
            lambda s: self.say("fleet", "ssh", f"still connecting to {count} host(s) after {s:.0f} s")
        ):
            self.fleet.connect()
        self.say("fleet", "ssh", f"{count}/{count} connected")
        for injector in plan.injectors:
            host = hosts[injector.id]
            self.states[injector.id] = _InjectorState(
                host=host,
                workdir=f"{host.base_dir}/runs/{plan.run_id}/{injector.id}",
                local=RunLayout(run_dir).injector(injector.id),
            )

    def deploy(self, plan: Plan, artifacts: Artifacts, run_dir: Path) -> dict[str, InjectorSite]:
        fleet = self._fleet()
        started = time.monotonic()
        bundles = {
            "libs": tar_bundle(self.cache_dir, "libs", [(p.name, p) for p in artifacts.jars]),
            "sims": tar_tree(self.cache_dir, "sims", artifacts.classes_dir, artifacts.simulation_key),
            "feeders": tar_bundle(
                self.cache_dir, "feeders", [(f"{n}.csv", p) for n, p in artifacts.feeders.items()]
            ),
            "agent": tar_bundle(self.cache_dir, "agent", [("spike-agent.pyz", artifacts.agent_zipapp)]),
        }
        by_base: dict[str, list[str]] = {}
        for injector_id, state in self.states.items():
            by_base.setdefault(state.host.base_dir, []).append(injector_id)
        pushed: dict[str, list[str]] = {}
        sent_bytes = 0
        for kind, (tar, digest) in bundles.items():
            size = tar.stat().st_size
            for base, names in by_base.items():
                with ticking(self._pushing(kind, size, len(names))):
                    sent = fleet.ensure_bundle(tar, digest, f"{base}/cache/{kind}", hosts=names)
                to = [n for n, was_sent in sent.items() if was_sent]
                pushed[kind] = pushed.get(kind, []) + to
                sent_bytes += size * len(to)
                self.say(
                    "fleet",
                    "deploy",
                    f"{kind}: {size:,} bytes pushed to {len(to)} host(s)"
                    + (f", already cached on {len(names) - len(to)}" if len(to) < len(names) else ""),
                )
        fleet.run(
            {i: f"mkdir -p {shlex.quote(s.workdir)}/results" for i, s in self.states.items()},
            timeout_s=60,
        )
        self.deploy_report = {
            "pushed": {kind: sorted(names) for kind, names in pushed.items()},
            "seconds": round(time.monotonic() - started, 3),
            "bytes_sent": sent_bytes,
            "digests": {kind: d for kind, (_, d) in bundles.items()},
        }
        sites = {}
        digests = {kind: d for kind, (_, d) in bundles.items()}
        for injector in plan.injectors:
            state = self.states[injector.id]
            cache = f"{state.host.base_dir}/cache"
            sites[injector.id] = InjectorSite(
                workdir=state.workdir,
                # a classpath entry `dir/*` is every jar in dir
                classpath=f"{cache}/sims/{digests['sims']}:{cache}/libs/{digests['libs']}/*",
                feeders={n: f"{cache}/feeders/{digests['feeders']}/{n}.csv" for n in artifacts.feeders},
                java=state.host.java,
                agent=(state.host.python, f"{cache}/agent/{digests['agent']}/spike-agent.pyz"),
                agent_writes_sink=False,
            )
        return sites

    def _pushing(self, kind: str, size: int, hosts: int) -> Callable[[float], None]:
        def say(elapsed_s: float) -> None:
            self.say(
                "fleet",
                "deploy",
                f"{kind}: pushing {size:,} bytes to up to {hosts} host(s), {elapsed_s:.0f} s",
            )

        return say

    def check_plan(self, plan: Plan) -> tuple[str, ...]:
        return ()  # subclasses refuse what their fleet cannot hold

    def recovery_details(self) -> dict[str, object]:
        return {}

    def check_target(self, base_url: str) -> str:
        """One GET of `base_url` from every host (any HTTP answer counts); InjectorError naming
        each host that cannot reach it, with the reason it gave (DNS, refused, time-out)."""
        probe = (
            "import sys,urllib.request,urllib.error\n"
            "try:\n"
            "    urllib.request.urlopen(urllib.request.Request(sys.argv[1],headers={'User-Agent':'spike-preflight'}),"
            "timeout=5)\n"
            "except urllib.error.HTTPError:\n"
            "    pass\n"
            "except Exception as e:\n"
            "    print(f'{type(e).__name__}: {e}'); sys.exit(1)\n"
        )
        commands = {
            name: f"{shlex.quote(state.host.python)} -c {shlex.quote(probe)} {shlex.quote(base_url + '/')}"
            for name, state in self.states.items()
        }
        results = self._fleet().run(commands, timeout_s=30, check=False)
        failed = {
            name: (r.stdout.strip() or r.stderr.strip())[-200:] for name, r in results.items() if r.exit_code
        }
        if failed:
            raise InjectorError(
                f"the target {base_url} is unreachable from {len(failed)} of {len(results)} injector(s): "
                + "; ".join(f"{name}: {why}" for name, why in sorted(failed.items())),
                where=", ".join(sorted(failed)),
                fix="check the injectors' network path to the target (DNS, security groups, the target's "
                "firewall, allow-lists) and that it is up",
            )
        return f"the target {base_url} answers every injector ({len(results)})"

    def clock_check(self) -> ClockCheck:
        samples = self._fleet().clock_offsets()
        return ClockCheck(
            offsets_ms={name: s.offset_ms for name, s in samples.items()},
            rtts_ms={name: s.rtt_ms for name, s in samples.items()},
        )

    def put(self, injector: InjectorPlan, local: Path) -> None:
        state = self.states[injector.id]
        self._fleet().put({injector.id: [(local, f"{state.workdir}/{local.name}")]})

    def launch(
        self, injector: InjectorPlan, command: Command, workdir: Path, *, log_name: str = "console.log"
    ) -> RemoteInjector:
        state = self.states[injector.id]
        env = [f"{k}={v}" for k, v in sorted(command.env.items())]
        line = shlex.join(["env", *env, *command.argv]) if env else shlex.join(command.argv)
        fleet = self._fleet()
        deadman = Deadman(
            python=state.host.python, expires_s=self.lease_expires_s, grace_s=self.deadman_grace_s
        )
        fleet.start_detached(injector.id, line, workdir=state.workdir, log_name=log_name, deadman=deadman)
        with self._lease_lock:
            if self._lease is None:
                self._lease = LeaseKeeper(fleet, self.lease_renew_s)
        self._lease.add(injector.id, state.workdir)
        handle = RemoteInjector(fleet, injector.id, state.workdir, log_name, workdir)
        state.handles.append(handle)
        for name in (log_name, *(n for n in TAILED if n != log_name)):
            if not any(m.local.name == name for m in state.mirrors):
                state.mirrors.append(_Mirror(f"{state.workdir}/{name}", workdir / name))
        return handle

    def sync(self) -> None:
        if self.fleet is None or not self.states:
            return
        list(self._pool.map(self._sync_one, list(self.states)))

    def collect(self, handle: InjectorHandle) -> Path:
        state = self.states[handle.injector_id]
        local = handle.results_dir()
        try:
            self._fetch_results(handle.injector_id, state, local)
        except SpikeError as exc:
            state.last_error = exc.render()
        return local  # on a failure, what the mirror holds is all there is

    def recover_results(
        self, plan: Plan, run_dir: Path, log_names: Sequence[str] = ("console.log", "agent.log")
    ) -> list[str]:
        """After spike died: reach every host of the run again, stop what is left of it, fetch each
        injector's results into the run directory and bring the watchdog's log home.

        Returns what could not be done, per injector (an empty list: every host answered).
        """
        try:
            self.provision(plan, run_dir)
        except SpikeError as exc:
            return [f"the hosts could not be reached: {exc.message}"]
        notes: list[str] = []
        fleet = self._fleet()
        for injector_id, state in self.states.items():
            try:
                for log_name in log_names:
                    fleet.signal(injector_id, state.workdir, log_name, "TERM")
                self._fetch_results(injector_id, state, state.local / "results")
                self._keep_deadman_log(injector_id, state)
            except SpikeError as exc:
                notes.append(f"{injector_id}: {exc.message}")
        with contextlib.suppress(Exception):
            fleet.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return notes

    def _fetch_results(self, injector_id: str, state: _InjectorState, local: Path) -> None:
        fetched = local.parent / ".results-fetched"
        self._fleet().fetch_tree(injector_id, f"{state.workdir}/results", fetched)
        # replace the mirrored files with the complete ones, keeping their paths
        for path in sorted(fetched.rglob("*")):
            if path.is_file():
                dest = local / path.relative_to(fetched)
                dest.parent.mkdir(parents=True, exist_ok=True)
                path.replace(dest)
        shutil.rmtree(fetched, ignore_errors=True)

    def teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        if self._lease is not None:
            self._lease.stop()  # from here on each host's watchdog is the backstop
        if self.fleet is not None:
            started = [state for state in self.states.values() if state.handles]
            handles = [handle for state in started for handle in state.handles]
            with contextlib.suppress(Exception):
                list(self._pool.map(_stop_quietly, handles))
            # unverified until the host itself has answered
            self._unverified = {s.handles[0].injector_id: "it was not checked" for s in started}
            with contextlib.suppress(Exception):
                list(self._pool.map(self._verify_one, started))
            with contextlib.suppress(Exception):
                self.fleet.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def teardown_report(self) -> TeardownReport:
        started = [i for i, state in self.states.items() if state.handles]
        if self._torn_down:
            running, unverified = self._leftovers, self._unverified
        else:  # asked before teardown: nothing has been checked yet
            running, unverified = {}, {i: "teardown has not run" for i in started}
        summary, clean = teardown_summary(
            started,
            running,
            unverified,
            lease_expires_s=self.lease_expires_s,
            grace_s=self.deadman_grace_s,
        )
        details: dict[str, object] = {"deploy": self.deploy_report}
        if self._deadman_fired:
            details["deadman"] = dict(sorted(self._deadman_fired.items()))
        return TeardownReport("; ".join([summary, *self._teardown_notes]), clean=clean, details=details)

    # -- internals -----------------------------------------------------------------------------

    def _fleet(self) -> SshFleet:
        if self.fleet is None:
            raise InjectorError(
                "the SSH fleet is not connected", fix="this is a bug in spike: please report it"
            )
        return self.fleet

    def _sync_one(self, injector_id: str) -> None:
        state = self.states[injector_id]
        fleet = self._fleet()
        try:
            if not state.simulation_log:
                for folder in fleet.listdir(injector_id, f"{state.workdir}/results"):
                    remote = f"{state.workdir}/results/{folder}/simulation.log"
                    state.mirrors.append(_Mirror(remote, state.local / "results" / folder / "simulation.log"))
                    state.simulation_log = True
            for mirror in state.mirrors:
                chunk = fleet.read_from(injector_id, mirror.remote, mirror.offset)
                if chunk:
                    mirror.local.parent.mkdir(parents=True, exist_ok=True)
                    with mirror.local.open("ab") as out:
                        out.write(chunk)
                    mirror.offset += len(chunk)
            status = fleet.read_from(injector_id, f"{state.workdir}/{STATUS_FILE}", 0)
            if status:
                write_atomic(state.local / STATUS_FILE, status, durable=False)  # rewritten every second
            for handle in state.handles:
                handle.refresh()
            state.unreachable_since = None
        except SpikeError as exc:
            # the connection reconnects on the next call; an injector lost for good is marked failed
            state.last_error = exc.render()
            now = time.monotonic()
            state.unreachable_since = state.unreachable_since or now
            renewed = self._lease.renewed_at.get(injector_id) if self._lease is not None else None
            if now - (renewed or state.unreachable_since) > self.lost_after_s:
                for handle in state.handles:
                    if handle.exit_code is None:
                        handle.exit_code = 255

    def _verify_one(self, state: _InjectorState) -> None:
        """Ask the host what is left of the run, and what its watchdog did."""
        injector_id = state.handles[0].injector_id
        fleet = self._fleet()
        try:
            remains = fleet.remains(injector_id, state.workdir, [h.log_name for h in state.handles])
        except SpikeError as exc:
            self._unverified[injector_id] = exc.message
            return
        except Exception as exc:
            self._unverified[injector_id] = f"checking failed: {type(exc).__name__}: {exc}"
            return
        del self._unverified[injector_id]
        if remains.groups:
            self._leftovers[injector_id] = "process group(s) " + " ".join(map(str, remains.groups))
        elif remains.watchdog is not None:
            self._leftovers[injector_id] = f"its dead-man watchdog (pid {remains.watchdog})"
        with contextlib.suppress(SpikeError, OSError):
            self._keep_deadman_log(injector_id, state)

    def _keep_deadman_log(self, injector_id: str, state: _InjectorState) -> None:
        """Bring the watchdog's log home; if it stopped the run, say so (recovery reads it)."""
        text = self._fleet().read_from(injector_id, f"{state.workdir}/{DEADMAN_LOG}", 0)
        if not text:
            return
        state.local.mkdir(parents=True, exist_ok=True)
        (state.local / DEADMAN_LOG).write_bytes(text)
        for line in text.decode("utf-8", "replace").splitlines():
            if EXPIRED_MARK in line:
                self._deadman_fired[injector_id] = line.strip()
                break


def _stop_quietly(handle: RemoteInjector) -> None:
    with contextlib.suppress(Exception):
        handle.stop(1.0)
