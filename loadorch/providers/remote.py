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
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import shutil
import tarfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from loadorch.errors import InjectorError, SpikeError
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.process import Command
from loadorch.providers.base import Artifacts, ClockCheck, InjectorHandle, InjectorSite, TeardownReport
from loadorch.transport.ssh import SshFleet, SshHost

STATUS_FILE = "agent-status.json"
# files appended to their local mirror every second (the results' simulation.log is found on the way)
TAILED = ("console.log", "agent.log", "agent-tap.lp")
LOST_AFTER_S = 120.0  # an injector unreachable this long is given up (its results may still be fetched)


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
        with contextlib.suppress(SpikeError):
            self.fleet.signal(self.injector_id, self.remote_workdir, self.log_name, "TERM")
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

    def __init__(self, *, cache_dir: Path, connect_timeout_s: float = 10.0, keepalive_s: float = 5.0) -> None:
        self.cache_dir = cache_dir
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.fleet: SshFleet | None = None
        self.states: dict[str, _InjectorState] = {}
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="spike-sync")
        self.deploy_report: dict[str, object] = {}
        self._teardown_notes: list[str] = []

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
        self.fleet.connect()
        for injector in plan.injectors:
            host = hosts[injector.id]
            self.states[injector.id] = _InjectorState(
                host=host,
                workdir=f"{host.base_dir}/runs/{plan.run_id}/{injector.id}",
                local=run_dir / "injectors" / injector.id,
            )

    def deploy(self, plan: Plan, artifacts: Artifacts, run_dir: Path) -> dict[str, InjectorSite]:
        fleet = self._fleet()
        started = time.monotonic()
        bundles = {
            "libs": _tar_bundle(self.cache_dir, "libs", [(p.name, p) for p in artifacts.jars]),
            "sims": _tar_tree(self.cache_dir, "sims", artifacts.classes_dir, artifacts.simulation_key),
            "feeders": _tar_bundle(
                self.cache_dir, "feeders", [(f"{n}.csv", p) for n, p in artifacts.feeders.items()]
            ),
            "agent": _tar_bundle(self.cache_dir, "agent", [("spike-agent.pyz", artifacts.agent_zipapp)]),
        }
        by_base: dict[str, list[str]] = {}
        for injector_id, state in self.states.items():
            by_base.setdefault(state.host.base_dir, []).append(injector_id)
        pushed: dict[str, list[str]] = {}
        for kind, (tar, digest) in bundles.items():
            for base, names in by_base.items():
                sent = fleet.ensure_bundle(tar, digest, f"{base}/cache/{kind}", hosts=names)
                pushed[kind] = pushed.get(kind, []) + [n for n, was_sent in sent.items() if was_sent]
        fleet.run(
            {i: f"mkdir -p {shlex.quote(s.workdir)}/results" for i, s in self.states.items()},
            timeout_s=60,
        )
        self.deploy_report = {
            "pushed": {kind: sorted(names) for kind, names in pushed.items()},
            "seconds": round(time.monotonic() - started, 3),
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
        fleet.start_detached(injector.id, line, workdir=state.workdir, log_name=log_name)
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
        fetched = local.parent / ".results-fetched"
        try:
            self._fleet().fetch_tree(handle.injector_id, f"{state.workdir}/results", fetched)
        except SpikeError as exc:
            state.last_error = exc.render()
            return local  # what the mirror holds is all there is
        # replace the mirrored files with the complete ones, keeping their paths
        for path in sorted(fetched.rglob("*")):
            if path.is_file():
                dest = local / path.relative_to(fetched)
                dest.parent.mkdir(parents=True, exist_ok=True)
                path.replace(dest)
        shutil.rmtree(fetched, ignore_errors=True)
        return local

    def teardown(self) -> None:
        if self.fleet is not None:
            for state in self.states.values():
                for handle in state.handles:
                    with contextlib.suppress(Exception):
                        handle.stop(1.0)
            with contextlib.suppress(Exception):
                self.fleet.close()
            self._teardown_notes.append(f"every process on {len(self.states)} SSH injector(s) stopped")
        self._pool.shutdown(wait=False, cancel_futures=True)

    def teardown_report(self) -> TeardownReport:
        running = [
            h.injector_id for state in self.states.values() for h in state.handles if h.exit_code is None
        ]
        notes = list(self._teardown_notes)
        if running:
            notes.append(f"could not confirm these stopped: {', '.join(sorted(set(running)))}")
        return TeardownReport(
            "; ".join(notes) or "nothing was started",
            clean=not running,
            details={"deploy": self.deploy_report},
        )

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
                tmp = state.local / f".{STATUS_FILE}.tmp"
                tmp.write_bytes(status)
                tmp.replace(state.local / STATUS_FILE)
            for handle in state.handles:
                handle.refresh()
            state.unreachable_since = None
        except SpikeError as exc:
            # the connection reconnects on the next call; an injector lost for good is marked failed
            state.last_error = exc.render()
            now = time.monotonic()
            state.unreachable_since = state.unreachable_since or now
            if now - state.unreachable_since > LOST_AFTER_S:
                for handle in state.handles:
                    if handle.exit_code is None:
                        handle.exit_code = 255


def _tar_bundle(cache_dir: Path, kind: str, files: Iterable[tuple[str, Path]]) -> tuple[Path, str]:
    """A tar of `files` (name in the archive, local file), named by the digest of their content."""
    entries = sorted(files)
    digest = hashlib.sha256()
    for name, path in entries:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    key = digest.hexdigest()[:20]
    return _write_tar(cache_dir, kind, key, entries), key


def _tar_tree(cache_dir: Path, kind: str, root: Path, key: str) -> tuple[Path, str]:
    """A tar of the tree under `root`, named by a digest the caller already knows (the build key)."""
    entries = sorted((str(p.relative_to(root)), p) for p in root.rglob("*") if p.is_file())
    return _write_tar(cache_dir, kind, key, entries), key


def _write_tar(cache_dir: Path, kind: str, key: str, entries: list[tuple[str, Path]]) -> Path:
    path = cache_dir / "bundles" / f"{kind}-{key}.tar"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # jars are compressed already: a plain tar is as small and much faster to make and unpack
    with tarfile.open(tmp, "w") as archive:
        for name, file in entries:
            archive.add(file, arcname=name, recursive=False)
    tmp.replace(path)
    return path
