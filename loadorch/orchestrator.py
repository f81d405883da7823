"""One run, start to finish: preflight -> build -> plan -> provision -> run -> collect -> judge -> teardown.

The orchestrator wires the adapters together and owns the cleanup guarantee:
whatever happens after the fleet is provisioned (success, failure, exception,
Ctrl-C, SIGTERM), `provider.teardown()` runs, and whatever results exist are
collected and judged first. It never prints; it reports to a `RunObserver`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from loadorch.agent.bundle import build_agent_zipapp
from loadorch.agent.graphite import gatling_graphite_properties
from loadorch.analysis.simlog import LogAccumulator, merge
from loadorch.analysis.stats import MergedStats
from loadorch.dashboards.grafana import GrafanaKey, annotate
from loadorch.engine.gatling.build import CompiledSimulation, cached_simulation, compile_simulation
from loadorch.engine.gatling.command import injector_command, reports_only_command
from loadorch.engine.gatling.render import render_simulation
from loadorch.errors import ExitCode, InjectorError, SpikeError
from loadorch.history.compare import compare_to_baseline
from loadorch.history.registry import history_lines, record_run
from loadorch.history.spike_slos import spike_slo_summary
from loadorch.livestream import LiveStream
from loadorch.metrics.run_points import event_line, start_lines, summary_lines
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.plan.shapes import phases
from loadorch.preflight import check_target_allowed, check_target_reachable, require_java
from loadorch.profiles.loader import LoadedProfile
from loadorch.profiles.model import Profile, ReplayShape, Slos
from loadorch.providers.base import (
    Artifacts,
    ClockCheck,
    InjectorHandle,
    InjectorSite,
    Provider,
    TeardownReport,
)
from loadorch.replay.fidelity import read_recorded, replay_fidelity
from loadorch.telemetry import (
    AGENT_DRAIN_TIMEOUT_S,
    TAP_FILE,
    RunWriter,
    TapForwarder,
    agent_command,
    metrics_summary,
    preflight_sink,
    read_status,
    wait_until_listening,
    write_agent_config,
)
from loadorch.verdict import achieved_users_per_second, judge

T = TypeVar("T")

# Gatling buffers simulation.log writes; a small buffer keeps the live view fresh.
LIVE_GATLING_PROPERTIES = {"gatling.data.file.bufferSize": "512"}
ASSERTIONS_FAILED = 2  # Gatling's exit status when its own assertions fail
GO_FILE = "go"  # holds the shared start instant, on the injector's clock
WARN_CLOCK_OFFSET_MS = 50.0  # an offset this large is compensated, but says the host's time sync is off


class RunObserver(Protocol):
    """Receives progress; the CLI draws it, tests record it."""

    def phase(self, name: str, detail: str = "") -> None: ...

    def tick(self, view: LiveView) -> None: ...


class NullObserver:
    def phase(self, name: str, detail: str = "") -> None:
        return None

    def tick(self, view: LiveView) -> None:
        return None


@dataclass(frozen=True)
class RunSettings:
    """How to run, beyond the plan."""

    runs_dir: Path
    cache_dir: Path
    java: str = "java"
    html_report: str = "wait"  # wait | background | off: Gatling's merged HTML report
    tick_s: float = 1.0
    start_lead_s: float = 1.0  # from the go signal (every injector ready) to the shared start instant
    ready_timeout_s: float = 180.0  # how long injectors may take to boot before the go is given anyway
    stop_grace_s: float = 10.0
    overrun_s: float = 60.0  # how long injectors may outlive the plan before they are stopped
    # keyword arguments of InfluxSettings.from_env (never secrets); None: no live metrics
    influx: Mapping[str, Any] | None = None
    grafana_url: str | None = None  # annotate the run's start and end there
    grafana_key: GrafanaKey | None = None
    max_clock_offset_ms: float = 250.0  # refuse injectors whose clock is further off than this
    compensate_clock: bool = True  # each injector waits for the shared instant on its own clock
    forward_drain_s: float = 30.0  # how long the last forwarded points may take to reach InfluxDB
    history_db: Path | None = None  # record the run in this registry (the CLI: spike's history.sqlite)
    baseline: str | None = None  # "last-passing" or a run id: a regression beyond tolerances fails the run
    schedule: str | None = None  # the schedule that started this run, recorded with it


@dataclass(frozen=True)
class RegionLive:
    """One region's row: this second's planned and achieved requests, totals so far, the worst p95."""

    name: str
    planned_requests_per_s: float
    achieved_requests_per_s: float
    requests: int
    ko: int
    p95_ms: int | None


@dataclass(frozen=True)
class LiveView:
    """What the terminal shows once a second."""

    elapsed_s: float
    duration_s: float
    regions: tuple[RegionLive, ...]
    injectors_running: int
    injectors_total: int


@dataclass
class InjectorRun:
    """An injector during and after the run."""

    plan: InjectorPlan
    handle: InjectorHandle
    accumulator: LogAccumulator
    log_path: Path | None = None
    offset: int = 0
    exit_code: int | None = None
    stopped_by_spike: bool = False


@dataclass
class RunOutcome:
    plan: Plan
    run_dir: Path
    summary: dict[str, Any]
    exit_code: ExitCode
    report_path: Path | None
    stats: MergedStats | None = field(default=None, repr=False)


def prepare_build(loaded: LoadedProfile, settings: RunSettings, observer: RunObserver) -> CompiledSimulation:
    source = render_simulation(loaded.profile)
    if cached_simulation(source, settings.cache_dir) is None:
        observer.phase("build", "compiling the Gatling simulation (once per scenario)")
    compiled = compile_simulation(source, settings.cache_dir)
    observer.phase("build", f"simulation ready ({compiled.key})")
    return compiled


def execute_run(
    loaded: LoadedProfile,
    *,
    provider: Provider,
    settings: RunSettings,
    regions: tuple[str, ...] = (),
    target: str | None = None,
    observer: RunObserver | None = None,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> RunOutcome:
    """Run a profile for real and return the judged outcome.

    spike's own errors are raised only before the fleet exists (preflight,
    build); after that, failures become the outcome's verdict. An unexpected
    exception still propagates, but only after every injector is torn down.
    """
    observer = observer or NullObserver()
    profile = loaded.profile
    base_url = (target or profile.target.base_url).rstrip("/")

    # Preflight: refuse a forbidden target before any connection or DNS lookup.
    check_target_allowed(base_url, profile.target.allow_hosts)
    require_java(settings.java)
    check_target_reachable(base_url)
    sink = preflight_sink(settings.influx) if settings.influx else None
    observer.phase("preflight", f"target {base_url} answers" + (", InfluxDB accepts writes" if sink else ""))

    compiled = prepare_build(loaded, settings, observer)
    plan = plan_run(
        profile,
        PlanOptions(
            now_ms=clock_ms(),
            provider=provider.name,
            regions=regions,
            target=target,
            start_lead_s=settings.start_lead_s,  # provisional: fixed again at the go signal
        ),
    )
    # absolute: injectors run in their own working directories
    run_dir = settings.runs_dir.resolve() / plan.run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    _write_json(run_dir / "plan.json", plan.to_dict())
    shutil.copyfile(loaded.source, run_dir / "profile.yaml")
    shutil.copyfile(compiled.source_path, run_dir / "Simulation.scala")
    observer.phase("plan", f"run {plan.run_id}: {len(plan.injectors)} injector(s), {plan.duration_s:.0f} s")

    artifacts = Artifacts(
        simulation_key=compiled.key,
        classes_dir=compiled.classes_dir,
        jars=tuple(Path(jar) for jar in compiled.dependency_jars),
        feeders={f.name: Path(f.file) for f in profile.scenario.feeders},
        agent_zipapp=build_agent_zipapp(settings.cache_dir),
        java=settings.java,
    )
    runs: list[InjectorRun] = []
    agents: dict[str, tuple[InjectorHandle, Path]] = {}
    writer = RunWriter(sink, run_dir) if sink else None
    forwarder: TapForwarder | None = None
    clock: ClockCheck | None = None
    interrupted = False
    failure: str | None = None
    try:
        provider.provision(plan, run_dir)
        sites = provider.deploy(plan, artifacts, run_dir)
        observer.phase("deploy", f"simulation {compiled.key} and the agent are on every injector")
        clock = provider.clock_check()
        _check_clock(clock, settings, observer)
        graphite = _start_agents(plan, provider, run_dir, settings, sites, agents)
        if settings.influx and not all(site.agent_writes_sink for site in sites.values()):
            forwarder = TapForwarder(
                preflight_sink(settings.influx),
                run_dir,
                [run_dir / "injectors" / i.id / TAP_FILE for i in plan.injectors],
            ).start()
        # Every injector boots now and waits for the go signal, so the shared start instant is fixed
        # only once all of them are ready, however long provisioning, deploying and JVMs take. Each
        # one reads the instant on its own clock: its measured offset is compensated.
        offsets = {
            i.id: round(clock.offsets_ms.get(i.id, 0.0)) if settings.compensate_clock else 0
            for i in plan.injectors
        }
        go_deadline_ms = clock_ms() + round(settings.ready_timeout_s * 1000)

        def launch(injector: InjectorPlan) -> InjectorHandle:
            site = sites[injector.id]
            command = injector_command(
                compiled,
                plan,
                injector,
                results_dir=f"{site.workdir}/results",
                feeders=site.feeders,
                heap_mb=profile.injector.heap_mb,
                java=site.java,
                extra_properties={
                    **LIVE_GATLING_PROPERTIES,
                    **graphite.get(injector.id, {}),
                    "spike.goFile": f"{site.workdir}/{GO_FILE}",
                },
                classpath=site.classpath,
                start_at_ms=go_deadline_ms + offsets[injector.id],  # no go by then: end without load
            )
            return provider.launch(injector, command, run_dir / "injectors" / injector.id)

        handles = _on_each(plan.injectors, launch, parallel=provider.parallel_launch)
        observer.phase("launch", f"{len(handles)} injector(s) booting; the go is given when all are ready")
        ready = _await_ready(plan, handles, provider, run_dir, go_deadline_ms - 5000, clock_ms)
        lead_s = settings.start_lead_s + provider.extra_lead_s
        plan = replace(plan, start_at_ms=clock_ms() + round(lead_s * 1000))

        def give_go(injector: InjectorPlan) -> None:
            go = run_dir / "injectors" / injector.id / GO_FILE
            go.with_suffix(".tmp").write_text(f"{plan.start_at_ms + offsets[injector.id]}\n")
            go.with_suffix(".tmp").replace(go)
            provider.put(injector, go)

        _on_each(plan.injectors, give_go, parallel=provider.parallel_launch)
        _write_json(run_dir / "plan.json", plan.to_dict())
        if writer is not None:
            writer.write(start_lines(plan, phases(profile)))
        _annotate(
            settings, plan, plan.start_at_ms, f"spike run {plan.run_id} starts ({plan.profile_name})", "start"
        )
        stream = LiveStream(plan.start_at_ms)
        for injector in plan.injectors:
            stream.add_tap(run_dir / "injectors" / injector.id / TAP_FILE, injector.region)
            accumulator = LogAccumulator(injector.id, injector.region, plan.start_at_ms, offsets[injector.id])
            runs.append(InjectorRun(injector, handles[injector.id], accumulator))
        not_ready = [i.id for i in plan.injectors if i.id not in ready]
        observer.phase(
            "go",
            f"{len(ready)}/{len(runs)} injector(s) ready; load begins in {lead_s:.1f} s"
            + (f" (not ready: {', '.join(not_ready)})" if not_ready else ""),
        )
        try:
            _monitor(plan, runs, stream, provider, settings, observer, clock_ms)
        except KeyboardInterrupt:
            interrupted = True
            observer.phase("interrupted", "stopping the load; collecting what exists (Ctrl-C again to abort)")
            for run in runs:
                run.stopped_by_spike = True
                run.handle.stop(settings.stop_grace_s)
        provider.sync()
        for run in runs:
            provider.collect(run.handle)
            run.exit_code = run.handle.poll()
            _read_new(run)
            run.accumulator.finish()
        if agents:
            observer.phase("drain", "the metrics agents are delivering their last points")
            for handle, _ in agents.values():
                handle.stop(AGENT_DRAIN_TIMEOUT_S)  # SIGTERM: drain to InfluxDB (or the spool), then exit
            provider.sync()  # the agents' final status and last tap lines
    except InjectorError as exc:
        failure = exc.render()
    finally:
        # teardown first: nothing may keep running (or costing) while the last points are forwarded
        try:
            provider.teardown()
        finally:
            teardown = provider.teardown_report()
            observer.phase("teardown", teardown.summary)
            if forwarder is not None:
                forwarder.stop(settings.forward_drain_s)
    agent_statuses = {name: read_status(workdir) for name, (_, workdir) in agents.items()}

    try:
        outcome = _conclude(
            plan,
            profile.slos,
            run_dir,
            runs,
            compiled,
            settings,
            observer,
            interrupted=interrupted,
            failure=failure,
            writer=writer,
            agent_statuses=agent_statuses,
            forwarder=forwarder,
            clock=clock,
            teardown=teardown,
            recording=_recording(loaded),
        )
        _judge_history(outcome, profile, settings, writer)
        return outcome
    finally:
        if writer is not None:
            writer.close()


def _start_agents(
    plan: Plan,
    provider: Provider,
    run_dir: Path,
    settings: RunSettings,
    sites: Mapping[str, InjectorSite],
    agents: dict[str, tuple[InjectorHandle, Path]],
) -> dict[str, dict[str, str]]:
    """Start every injector's metrics agent, then wait until each listens; returns Gatling's -D properties."""

    def start(injector: InjectorPlan) -> tuple[InjectorHandle, Path]:
        site = sites[injector.id]
        workdir = run_dir / "injectors" / injector.id
        influx = settings.influx if site.agent_writes_sink else None
        config = write_agent_config(workdir, plan.run_id, injector, influx)
        provider.put(injector, config)
        command = agent_command(f"{site.workdir}/{config.name}", site.agent)
        return provider.launch(injector, command, workdir, log_name="agent.log"), workdir

    agents.update(_on_each(plan.injectors, start, parallel=provider.parallel_launch))
    return {
        injector_id: gatling_graphite_properties(
            wait_until_listening(workdir, injector_id, handle.poll, provider.sync)
        )
        for injector_id, (handle, workdir) in agents.items()
    }


def _on_each(
    injectors: Sequence[InjectorPlan], action: Callable[[InjectorPlan], T], *, parallel: bool
) -> dict[str, T]:
    """`action` for every injector, at once where the provider allows it; results in plan order."""
    if not parallel:
        return {injector.id: action(injector) for injector in injectors}
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(injectors)))) as pool:
        results = list(pool.map(action, injectors))
    return {injector.id: result for injector, result in zip(injectors, results, strict=True)}


_WAITING = b"waiting for the go signal"


def _await_ready(
    plan: Plan,
    handles: Mapping[str, InjectorHandle],
    provider: Provider,
    run_dir: Path,
    deadline_ms: int,
    clock_ms: Callable[[], int],
) -> set[str]:
    """Wait until every injector waits for the go (or has died); returns the ready ones."""
    ready: set[str] = set()
    while True:
        provider.sync()
        for injector in plan.injectors:
            if injector.id not in ready:
                console = run_dir / "injectors" / injector.id / "console.log"
                with contextlib.suppress(OSError), console.open("rb") as handle:
                    if _WAITING in handle.read(1 << 16):
                        ready.add(injector.id)
        pending = [i for i in handles if i not in ready and handles[i].poll() is None]
        if not pending or clock_ms() >= deadline_ms:
            return ready
        time.sleep(0.05)


def _check_clock(clock: ClockCheck, settings: RunSettings, observer: RunObserver) -> None:
    """Refuse a fleet whose clocks disagree beyond `max_clock_offset_ms`; say what was measured."""
    if not clock.offsets_ms:
        return
    worst_id, worst = max(clock.offsets_ms.items(), key=lambda item: abs(item[1]))
    if abs(worst) > settings.max_clock_offset_ms:
        raise InjectorError(
            f"clock offset {worst:+.0f} ms against this machine exceeds {settings.max_clock_offset_ms:.0f} ms",
            where=worst_id,
            fix="enable time sync on the injector (chrony/systemd-timesyncd), or raise --max-clock-offset-ms",
        )
    note = "compensated" if settings.compensate_clock else "not compensated"
    warning = "warning: " if abs(worst) > WARN_CLOCK_OFFSET_MS else ""
    observer.phase(
        "clock",
        f"{warning}injector clock skew {clock.skew_ms:.1f} ms, worst offset {worst:+.1f} ms ({worst_id}); {note}"
        + ("; check the injectors' time sync" if warning else ""),
    )


def _monitor(
    plan: Plan,
    runs: list[InjectorRun],
    stream: LiveStream,
    provider: Provider,
    settings: RunSettings,
    observer: RunObserver,
    clock_ms: Callable[[], int],
) -> None:
    deadline_ms = plan.start_at_ms + (plan.duration_s + settings.overrun_s) * 1000
    while True:
        provider.sync()
        for run in runs:
            _read_new(run)
        running = [r for r in runs if r.handle.poll() is None]
        now = clock_ms()
        observer.tick(_live_view(plan, stream, now, len(running), len(runs)))
        if not running:
            return
        if now > deadline_ms:
            for run in running:
                run.stopped_by_spike = True
                run.handle.stop(settings.stop_grace_s)
            return
        _sleep_until_tick_or_all_exited(runs, settings.tick_s)


def _sleep_until_tick_or_all_exited(runs: list[InjectorRun], tick_s: float) -> None:
    """Sleep one tick, but notice within 50 ms when the last injector exits."""
    end = time.monotonic() + tick_s
    while time.monotonic() < end:
        if all(r.handle.poll() is not None for r in runs):
            return
        time.sleep(0.05)


def _read_new(run: InjectorRun) -> None:
    """Feed the bytes Gatling appended to this injector's simulation.log since the last read."""
    if run.log_path is None:
        found = sorted(run.handle.results_dir().glob("*/simulation.log"))
        if not found:
            return
        run.log_path = found[0]
    try:
        with run.log_path.open("rb") as handle:
            handle.seek(run.offset)
            chunk = handle.read()
    except OSError:
        return
    if chunk:
        run.offset += len(chunk)
        run.accumulator.feed(chunk)


def _live_view(plan: Plan, stream: LiveStream, now_ms: int, running: int, total: int) -> LiveView:
    """What the terminal shows, from the agents' stream (the one InfluxDB receives)."""
    elapsed_s = max(0.0, (now_ms - plan.start_at_ms) / 1000)
    stream.poll()
    rows = []
    for region in plan.regions:
        # Gatling reports a second when it ends and the agent adds up to a second: the row shows
        # the newest settled second, planned and achieved for that same second
        second = stream.settled_second(region.name)
        now = stream.region_second(region.name, second) if second is not None else None
        planned_users = region.curve.users_between(second, second + 1) if second is not None else 0.0
        rows.append(
            RegionLive(
                name=region.name,
                planned_requests_per_s=planned_users * plan.requests_per_user,
                achieved_requests_per_s=now.requests if now else 0.0,
                requests=int(stream.requests[region.name]),
                ko=int(stream.ko[region.name]),
                p95_ms=None if now is None or now.p95_ms is None else int(now.p95_ms),
            )
        )
    return LiveView(elapsed_s, plan.duration_s, tuple(rows), running, total)


def _conclude(
    plan: Plan,
    slos: Slos,
    run_dir: Path,
    runs: list[InjectorRun],
    compiled: CompiledSimulation,
    settings: RunSettings,
    observer: RunObserver,
    *,
    interrupted: bool,
    failure: str | None,
    writer: RunWriter | None = None,
    agent_statuses: Mapping[str, Mapping[str, Any]] | None = None,
    forwarder: TapForwarder | None = None,
    clock: ClockCheck | None = None,
    teardown: TeardownReport | None = None,
    recording: list[float] | None = None,
) -> RunOutcome:
    collected_at = time.monotonic()
    observer.phase("collect", "merging every injector's results")
    report_dir = run_dir / "report"
    report_dir.mkdir(exist_ok=True)
    logs = []
    for run in runs:
        if run.log_path and run.log_path.is_file():
            dest = report_dir / f"{run.plan.id}.log"
            _link_or_copy(run.log_path, dest)
            logs.append(dest)
    report_proc = None
    if settings.html_report != "off" and logs:
        command = reports_only_command(compiled.classpath(), run_dir, "report", java=settings.java)
        report_proc = subprocess.Popen(
            command.argv,
            stdout=(run_dir / "report-console.log").open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # in the background the report outlives spike; when waiting it is stopped with it
            start_new_session=settings.html_report == "background",
        )
    stats = merge([r.accumulator for r in runs]) if runs else None
    injectors = [
        {
            "id": r.plan.id,
            "region": r.plan.region,
            "exit_code": r.exit_code,
            "state": _injector_state(r),
            "log": str(r.log_path) if r.log_path else None,
            "ready_margin_ms": _ready_margin_ms(r.handle.results_dir().parent / "console.log"),
            "release_offset_ms": _release_offset_ms(
                r.handle.results_dir().parent / "console.log", r.accumulator.origin_ms
            ),
        }
        for r in runs
    ]
    verdict = judge(plan, slos, stats, injectors, interrupted=interrupted, failure=failure)
    if writer is not None:
        now_ms = int(time.time() * 1000)
        lines = [event_line(plan.run_id, "end", verdict.reason, now_ms)]
        if stats is not None and stats.requests:
            lines += summary_lines(plan, stats, verdict.verdict, now_ms)
        lines.append(event_line(plan.run_id, "verdict", verdict.reason, now_ms + 1, verdict=verdict.verdict))
        writer.write(lines)
    annotation_error = _annotate(
        settings,
        plan,
        int(time.time() * 1000),
        f"spike run {plan.run_id}: {verdict.verdict} ({verdict.reason})",
        "end",
    )
    report_path = report_dir / "index.html"
    summary = {
        **verdict.summary,
        "run_dir": str(run_dir),
        "report": str(report_path) if report_proc else None,
        "report_state": "building" if report_proc else "off",
        "judged_after_s": round(time.monotonic() - collected_at, 3),
    }
    if settings.grafana_url:
        summary["grafana_annotations"] = "failed: " + annotation_error if annotation_error else "added"
    if agent_statuses:
        summary["metrics"] = metrics_summary(agent_statuses, writer, forwarder)
    if recording is not None and stats is not None:
        # a replay: how closely the achieved arrivals followed the recording it came from
        summary["replay_fidelity"] = replay_fidelity(recording, achieved_users_per_second(stats))
    if clock is not None and clock.offsets_ms:
        summary["clock"] = {**clock.to_dict(), "compensated": settings.compensate_clock}
    exit_code = verdict.exit_code
    if teardown is not None:
        summary["teardown"] = {"summary": teardown.summary, "clean": teardown.clean, **teardown.details}
        if not teardown.clean:
            # whatever the load did, something may still be running or billed: that is the news
            exit_code = ExitCode.INFRASTRUCTURE
            summary["reason"] = f"teardown incomplete: {teardown.summary}; {summary.get('reason', '')}"
    _write_json(run_dir / "summary.json", summary)  # the verdict is on disk before the HTML report
    if report_proc is not None and settings.html_report == "wait":
        observer.phase("report", "Gatling is writing the merged HTML report")
        try:
            report_proc.wait(timeout=1800)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            report_proc.kill()
            report_proc.wait()
        # Gatling exits 2 when the simulation's own assertions failed; the report is written anyway
        done = report_proc.returncode in (0, ASSERTIONS_FAILED) and report_path.is_file()
        summary.update(
            report=str(report_path) if done else None,
            report_state="built"
            if done
            else f"failed (exit {report_proc.returncode}, see report-console.log)",
            report_after_s=round(time.monotonic() - collected_at, 3),
        )
        _write_json(run_dir / "summary.json", summary)
    return RunOutcome(plan, run_dir, summary, exit_code, report_path if summary["report"] else None, stats)


def _judge_history(
    outcome: RunOutcome, profile: Profile, settings: RunSettings, writer: RunWriter | None
) -> None:
    """Spike SLOs, the baseline comparison and the run's entry in the history registry.

    A broken registry never hides the run's own verdict: its error lands in summary.json.
    """
    plan, summary = outcome.plan, outcome.summary
    if outcome.stats is not None and outcome.stats.requests:
        summary["spike_slos"] = spike_slo_summary(outcome.stats, plan, profile.slos)
    if settings.baseline is not None and settings.history_db is not None:
        try:
            comparison = compare_to_baseline(
                summary,
                settings.baseline,
                plan.profile_name,
                plan_digest=plan.profile_digest,
                provider=plan.provider,
                db=settings.history_db,
            )
        except SpikeError as exc:
            summary["regression"] = {"error": exc.render()}
            comparison = None
        if comparison is not None:
            summary["regression"] = comparison.to_dict()
            if comparison.verdict == "regressed" and summary.get("verdict") == "passed":
                summary["verdict"] = "failed"
                summary["reason"] = f"regressed against {comparison.baseline_run_id}: " + ", ".join(
                    comparison.regressed_requests or ["all requests"]
                )
                outcome.exit_code = ExitCode.SLO_FAILED
        elif "regression" not in summary:
            summary["regression"] = {"note": f"no baseline ({settings.baseline}) to compare with yet"}
    if settings.history_db is not None:
        try:
            record = record_run(
                summary,
                profile=plan.profile_name,
                plan_digest=plan.profile_digest,
                provider=plan.provider,
                schedule=settings.schedule,
                db=settings.history_db,
            )
            if writer is not None:
                writer.write(history_lines(record))
            summary["history"] = str(settings.history_db)
        except SpikeError as exc:
            summary["history"] = f"not recorded: {exc.message}"
    _write_json(outcome.run_dir / "summary.json", summary)


def _recording(loaded: LoadedProfile) -> list[float] | None:
    """A replay profile's recording on the run's timeline (None for other shapes, or without one)."""
    shape = loaded.profile.shape
    if not isinstance(shape, ReplayShape) or shape.recorded_file is None:
        return None
    path = loaded.source.parent / shape.recorded_file
    return read_recorded(path, scale=shape.scale, speedup=shape.speedup)


def _annotate(settings: RunSettings, plan: Plan, time_ms: int, text: str, event: str) -> str | None:
    """A Grafana annotation, when a Grafana is configured; a failure is reported, never fatal."""
    if not settings.grafana_url or settings.grafana_key is None:
        return None
    try:
        annotate(settings.grafana_url, settings.grafana_key, plan.run_id, time_ms, text, tags=(event,))
    except SpikeError as exc:
        return exc.message
    return None


_READY = re.compile(rb"spike: injector \S+ ready, start in (-?\d+) ms")
_RELEASED = re.compile(rb"spike: injector \S+ released at (\d+)")


def _ready_margin_ms(console_log: Path) -> int | None:
    """How long before the shared start the injector was ready (negative: it was late)."""
    match = _console_match(console_log, _READY)
    return int(match.group(1)) if match else None


def _release_offset_ms(console_log: Path, start_ms: int) -> int | None:
    """When the injector's start gate opened, on its own clock, against the shared start."""
    match = _console_match(console_log, _RELEASED)
    return int(match.group(1)) - start_ms if match else None


def _console_match(console_log: Path, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
    try:
        with console_log.open("rb") as handle:
            return pattern.search(handle.read(1 << 16))
    except OSError:
        return None


def _injector_state(run: InjectorRun) -> str:
    if run.exit_code in (0, ASSERTIONS_FAILED) and not run.stopped_by_spike:
        return "completed"
    if run.stopped_by_spike:
        return "stopped"
    return "failed"


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
