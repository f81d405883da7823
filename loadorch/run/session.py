"""One run as a session: preflight, plan, build, provision, deploy, go, run, collect, judge, teardown.

Each phase is a method; `execute` calls them in order and owns the guarantees:

- before the plan exists, spike's errors are raised and nothing is created;
- from the moment the run id exists, the run directory holds a journal and a
  lock, and every way out (success, a failure, an exception, Ctrl-C, SIGTERM,
  SIGHUP, twice) collects what exists, tears the fleet down, judges, and writes
  summary.json and the history entry;
- teardown always runs, and the result says "clean" only if the provider verified it.

It never prints; it reports to a `RunObserver`.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from loadorch.agent.bundle import build_agent_zipapp
from loadorch.agent.graphite import gatling_graphite_properties
from loadorch.analysis.simlog import LogAccumulator, merge
from loadorch.analysis.stats import MergedStats
from loadorch.atomic import write_atomic, write_json_atomic
from loadorch.diskspace import DiskNeed, check_disk, estimate_run_disk
from loadorch.engine.gatling import console
from loadorch.engine.gatling.build import CompiledSimulation, cached_simulation, compile_simulation
from loadorch.engine.gatling.command import injector_command
from loadorch.engine.gatling.render import render_simulation
from loadorch.errors import InjectorError, SpikeError
from loadorch.livestream import LiveStream
from loadorch.metrics.pending import flush_pending_quietly, write_sink_settings
from loadorch.metrics.run_points import start_lines
from loadorch.metrics.sink import Sink
from loadorch.pacing import Every
from loadorch.paths import state_dir
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.plan.shapes import phases
from loadorch.preflight import check_target_allowed, check_target_reachable, require_java
from loadorch.profiles.loader import LoadedProfile
from loadorch.providers.base import Artifacts, ClockCheck, InjectorHandle, InjectorSite, Provider
from loadorch.run.adjust import with_abort, with_failure, with_gates, with_teardown
from loadorch.run.clock import check_clock
from loadorch.run.journal import Journal, RunLock
from loadorch.run.layout import RunLayout
from loadorch.run.live import InjectorRun
from loadorch.run.post import PostRun, annotate_start, default_post_steps
from loadorch.run.result import RunResult, Teardown, Verdict
from loadorch.run.settings import NullObserver, RunObserver, RunSettings
from loadorch.run.signals import Interrupts
from loadorch.run.stop import StopWatch
from loadorch.run.watch import FORCED_GRACE_S, LoadWatch, gate_findings, stop_injectors
from loadorch.telemetry import (
    AGENT_DRAIN_TIMEOUT_S,
    RunWriter,
    TapForwarder,
    agent_command,
    drain_agents,
    metrics_summary,
    preflight_sink,
    read_status,
    wait_until_listening,
    write_agent_config,
)
from loadorch.verdict import RunContext, judge

T = TypeVar("T")

# Gatling buffers simulation.log writes; a small buffer keeps the live view fresh.
LIVE_GATLING_PROPERTIES = {"gatling.data.file.bufferSize": "512"}


class RunSession:
    """One run of a profile; see the module docstring for what it guarantees."""

    def __init__(
        self,
        loaded: LoadedProfile,
        *,
        provider: Provider,
        settings: RunSettings,
        regions: tuple[str, ...] = (),
        target: str | None = None,
        observer: RunObserver | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        interrupts: Interrupts | None = None,
    ) -> None:
        self.loaded = loaded
        self.profile = loaded.profile
        self.provider = provider
        self.settings = settings
        self.regions = regions
        self.target = target
        self.base_url = (target or self.profile.target.base_url).rstrip("/")
        self.observer = observer or NullObserver()
        self.clock_ms = clock_ms
        self.interrupts = interrupts or Interrupts()
        self.post_steps: list[Callable[[PostRun, RunResult], RunResult]] = default_post_steps()
        # filled in as the phases go
        self.sink: Sink | None = None
        self.plan_value: Plan | None = None
        self.layout: RunLayout | None = None
        self.journal: Journal | None = None
        self.lock: RunLock | None = None
        self.compiled: CompiledSimulation | None = None
        self.sites: dict[str, InjectorSite] = {}
        self.clock: ClockCheck | None = None
        self.agents: dict[str, tuple[InjectorHandle, RunLayout, str]] = {}
        self.runs: list[InjectorRun] = []
        self.writer: RunWriter | None = None
        self.forwarder: TapForwarder | None = None
        self.stream: LiveStream | None = None
        self.offsets: dict[str, int] = {}
        self.interrupted = False
        self.failure: str | None = None
        self.crashed: str | None = None  # spike's own failure mid-run: the run is aborted
        self.load_ended_ms: int | None = None
        self.teardown_value: Teardown | None = None
        self.stats: MergedStats | None = None
        self.disk_need: DiskNeed | None = None
        self.abort_criterion: str | None = None
        self.start_annotation: str | None = None  # None: added, or no Grafana; else why it failed

    # ------------------------------------------------------------------ phases

    @property
    def plan(self) -> Plan:
        assert self.plan_value is not None, "plan() comes first"
        return self.plan_value

    @property
    def run_layout(self) -> RunLayout:
        assert self.layout is not None, "plan() comes first"
        return self.layout

    def preflight(self) -> None:
        """Refuse what cannot run, before anything is built, written or started."""
        check_target_allowed(self.base_url, self.profile.target.allow_hosts)
        for criterion in (*self.profile.stop_when, *self.settings.stop_when):
            if criterion.health_url is not None:  # probed once a second: only where load may go too
                check_target_allowed(criterion.health_url, self.profile.target.allow_hosts)
        require_java(self.settings.java)
        try:
            check_target_reachable(self.base_url)
        except SpikeError as exc:
            if not self.provider.checks_target_from_injectors:
                raise
            # remote injectors may reach what this machine cannot (a private network, region DNS)
            self.observer.phase(
                "preflight", f"{exc.message} from this machine; every injector checks it after the deploy"
            )
        self.provider.preflight()
        self.sink = preflight_sink(self.settings.influx) if self.settings.influx else None
        if self.sink is not None and self.settings.influx is not None:
            # earlier runs' points that never reached this InfluxDB go first (bounded in time)
            flushed = flush_pending_quietly(self.settings.runs_dir, self.sink, self.settings.influx)
            if flushed.pending_before:
                self.observer.phase(
                    "metrics",
                    f"delivered {flushed.delivered:,} of {flushed.pending_before:,} points earlier runs left "
                    f"pending ({flushed.pending_after:,} still pending: `spike metrics flush`)",
                )
        self.observer.phase(
            "preflight",
            f"target {self.base_url} answers" + (", InfluxDB accepts writes" if self.sink else ""),
        )

    def make_plan(self) -> None:
        """The plan and what can refuse it (provider, cloud, disk): exit 2, with nothing written yet."""
        self.plan_value = plan_run(
            self.profile,
            PlanOptions(
                now_ms=self.clock_ms(),
                provider=self.provider.name,
                regions=self.regions,
                target=self.target,
                start_lead_s=self.settings.start_lead_s,  # provisional: fixed again at the go signal
                max_injectors=self.settings.max_injectors,
            ),
        )
        # what a provider refuses about the plan (aws: regions, CIDR, TTL, budget, then the type
        # offered and the vCPU quota): exit 2, before the run directory exists
        for warning in self.provider.check_plan(self.plan):
            self.observer.phase("preflight", warning)
        self.disk_need = estimate_run_disk(
            self.plan,
            html_report=self.settings.html_report,
            request_names=len(self.profile.scenario.requests),
            live_metrics=self.settings.influx is not None,
            stop_grace_s=self.settings.stop_grace_s,
        )
        # refused here, before anything is written: the run directory's disk and spike's state dir
        check_disk(self.disk_need, self.settings.runs_dir.resolve(), state_dir())

    def open_run(self) -> None:
        """The run directory, its lock, its journal, the plan and the profile: written whole, or not at all.

        A signal meanwhile is held back until all of it is on disk, then handled like any other
        interrupt, so a run whose journal exists always ends with a summary.
        """
        layout = RunLayout.of(self.settings.runs_dir, self.plan.run_id)
        layout.root.mkdir(parents=True, exist_ok=False)
        self.layout = layout
        write_sink_settings(layout.root, self.settings.influx)  # so pending points can be delivered later
        self.lock = RunLock(layout).acquire()
        self.journal = Journal(layout)
        self.journal.record(
            "planned",
            provider=self.provider.name,
            injectors=[i.id for i in self.plan.injectors],
            profile_source=str(self.loaded.source.resolve()),
            plan_digest=self.plan.profile_digest,
            history_db=str(self.settings.history_db) if self.settings.history_db else None,
            schedule=self.settings.schedule,
            # what recovery needs to reach the hosts again (static: the inventory; aws: endpoint, account)
            **self.provider.recovery_details(),
        )
        write_json_atomic(layout.plan, self.plan.to_dict())
        shutil.copyfile(self.loaded.source, layout.profile)
        self.observer.phase(
            "plan",
            f"run {self.plan.run_id}: {len(self.plan.injectors)} injector(s), {self.plan.duration_s:.0f} s",
        )

    def build(self) -> None:
        source = render_simulation(self.profile)
        if cached_simulation(source, self.settings.cache_dir) is None:
            self.observer.phase("build", "compiling the Gatling simulation (once per scenario)")
        self.compiled = compile_simulation(source, self.settings.cache_dir)
        shutil.copyfile(self.compiled.source_path, self.run_layout.simulation)
        self._record("built", simulation=self.compiled.key)
        self.observer.phase("build", f"simulation ready ({self.compiled.key})")

    def provision(self) -> None:
        self._record("provisioning")
        self.provider.provision(self.plan, self.run_layout.root)
        self._record("provisioned")

    def deploy(self) -> None:
        assert self.compiled is not None
        artifacts = Artifacts(
            simulation_key=self.compiled.key,
            classes_dir=self.compiled.classes_dir,
            jars=tuple(Path(jar) for jar in self.compiled.dependency_jars),
            feeders={f.name: Path(f.file) for f in self.profile.scenario.feeders},
            agent_zipapp=build_agent_zipapp(self.settings.cache_dir),
            java=self.settings.java,
        )
        self.sites = self.provider.deploy(self.plan, artifacts, self.run_layout.root)
        self._record("deployed")
        self.observer.phase("deploy", f"simulation {self.compiled.key} and the agent are on every injector")
        said = self.provider.check_target(self.base_url)  # from where the load comes, before the go
        if said is not None:
            self.observer.phase("preflight", said)
        self.clock = self.provider.clock_check()
        self._check_clock(self.clock)

    def go(self) -> None:
        """Start the agents and the injectors; when every injector waits at its gate, give the go."""
        assert self.compiled is not None
        plan, layout, settings = self.plan, self.run_layout, self.settings
        graphite = self._start_agents()
        if self.sink is not None:
            self.writer = RunWriter(self.sink, layout.root)
        if settings.influx and not all(site.agent_writes_sink for site in self.sites.values()):
            self.forwarder = TapForwarder(
                preflight_sink(settings.influx), layout.root, [layout.tap(i.id) for i in plan.injectors]
            ).start()
        # Every injector boots now and waits for the go signal, so the shared start instant is fixed
        # only once all of them are ready, however long provisioning, deploying and JVMs take. Each
        # one reads the instant on its own clock: its measured offset is compensated.
        clock = self.clock or ClockCheck()
        self.offsets = {
            i.id: round(clock.offsets_ms.get(i.id, 0.0)) if settings.compensate_clock else 0
            for i in plan.injectors
        }
        go_deadline_ms = self.clock_ms() + round(settings.ready_timeout_s * 1000)
        compiled = self.compiled

        def launch(injector: InjectorPlan) -> InjectorHandle:
            site = self.sites[injector.id]
            command = injector_command(
                compiled,
                plan,
                injector,
                results_dir=f"{site.workdir}/results",
                feeders=site.feeders,
                heap_mb=self.profile.injector.heap_mb,
                java=site.java,
                extra_properties={
                    **LIVE_GATLING_PROPERTIES,
                    **graphite.get(injector.id, {}),
                    "spike.goFile": f"{site.workdir}/{layout.go_file(injector.id).name}",
                },
                classpath=site.classpath,
                start_at_ms=go_deadline_ms + self.offsets[injector.id],  # no go by then: end without load
                jvm_options=settings.jvm_options,
            )
            return self.provider.launch(injector, command, layout.injector(injector.id))

        handles = self._on_each(plan.injectors, launch)
        for injector in plan.injectors:
            accumulator = LogAccumulator(
                injector.id, injector.region, plan.start_at_ms, self.offsets[injector.id]
            )
            self.runs.append(InjectorRun(injector, handles[injector.id], accumulator))
        self._record("launched")
        self.observer.phase(
            "launch", f"{len(handles)} injector(s) booting; the go is given when all are ready"
        )
        ready = self._await_ready(handles, go_deadline_ms - 5000)
        lead_s = settings.start_lead_s + self.provider.extra_lead_s
        self.plan_value = plan = replace(plan, start_at_ms=self.clock_ms() + round(lead_s * 1000))
        for run in self.runs:  # the instant is fixed now: every log is read against it
            run.accumulator = LogAccumulator(
                run.plan.id, run.plan.region, plan.start_at_ms, self.offsets[run.plan.id]
            )

        def give_go(injector: InjectorPlan) -> None:
            go = layout.go_file(injector.id)
            write_atomic(go, f"{plan.start_at_ms + self.offsets[injector.id]}\n")
            self.provider.put(injector, go)

        self._on_each(plan.injectors, give_go)
        write_json_atomic(layout.plan, plan.to_dict())
        self._record("go", start_at_ms=plan.start_at_ms, offsets=self.offsets)
        if self.writer is not None:
            self.writer.write(start_lines(plan, phases(self.profile)))
        self.start_annotation = annotate_start(settings, plan)
        self.stream = LiveStream(plan.start_at_ms)
        for injector in plan.injectors:
            self.stream.add_tap(layout.tap(injector.id), injector.region)
        not_ready = [i.id for i in plan.injectors if i.id not in ready]
        self.observer.phase(
            "go",
            f"{len(ready)}/{len(self.runs)} injector(s) ready; load begins in {lead_s:.1f} s"
            + (f" (not ready: {', '.join(not_ready)})" if not_ready else ""),
        )

    def run(self) -> None:
        """Watch the load until every injector has ended (or overran the plan and was stopped)."""
        plan, settings = self.plan, self.settings
        assert self.stream is not None
        criteria = (*self.profile.stop_when, *settings.stop_when)
        stopwatch = StopWatch(criteria).start() if criteria else None
        min_free = self.disk_need.min_free_bytes if self.disk_need is not None else 64 << 20
        watch = LoadWatch(
            plan=plan,
            provider=self.provider,
            runs=self.runs,
            stream=self.stream,
            observer=self.observer,
            clock_ms=self.clock_ms,
            record=self._record,
            watched_dirs=[self.run_layout.root, state_dir()],
            min_free_bytes=min_free,
            consoles={r.plan.id: self.run_layout.console(r.plan.id) for r in self.runs},
            stop_grace_s=settings.stop_grace_s,
            overrun_s=settings.overrun_s,
            tick_s=settings.tick_s,
        )
        try:
            self.failure = self.failure or watch.watch(stopwatch).failure
        finally:
            if stopwatch is not None:
                stopwatch.stop()
            self.abort_criterion = watch.abort_criterion
            self.crashed = self.crashed or watch.crashed
        self.load_ended_ms = self.clock_ms()
        self._record("load-ended")

    def collect(self) -> None:
        """Every injector's results and the agents' last points, before anything is torn down."""
        self.provider.sync()
        for run in self.runs:
            try:
                self.provider.collect(run.handle)
            except SpikeError as exc:
                self.failure = self.failure or exc.render()
            run.exit_code = run.handle.poll()
            run.read_new()
            run.accumulator.finish()
        if self.agents:
            self.observer.phase("drain", "the metrics agents are delivering their last points")
            drain_s = FORCED_GRACE_S if self.interrupts.forced else AGENT_DRAIN_TIMEOUT_S
            # SIGTERM to every agent at once: each drains to InfluxDB (or its spool), then exits
            for injector_id, why in drain_agents((h for h, _, _ in self.agents.values()), drain_s).items():
                self.observer.phase("drain", f"{injector_id}: {why}")
            self.provider.sync()  # the agents' final status and last tap lines
        self.stats = merge([r.accumulator for r in self.runs]) if self.runs else None
        self._record("collected", requests=self.stats.requests if self.stats else 0)

    def teardown(self) -> None:
        """Nothing may keep running (or costing) while the last points are forwarded."""
        self._record("tearing-down")
        try:
            self.provider.teardown()
        finally:
            report = self.provider.teardown_report()
            self.teardown_value = Teardown(report.summary, report.clean, dict(report.details))
            self.observer.phase("teardown", report.summary)
            if self.forwarder is not None:
                self.forwarder.stop(
                    FORCED_GRACE_S if self.interrupts.forced else self.settings.forward_drain_s
                )
            self._record("torn-down", clean=report.clean)

    def judge(self) -> RunResult:
        """The verdict from the exact merged statistics, then the validity gates and the teardown."""
        plan, layout = self.plan, self.run_layout
        collected_at = time.monotonic()
        outcomes = [r.outcome(layout.console(r.plan.id), self.settings.overrun_s) for r in self.runs]
        context = RunContext(str(layout.root), interrupted=self.interrupted, failure=self.failure)
        result = judge(plan, self.profile.slos, self.stats, outcomes, context)
        if self.crashed is not None:
            result = with_failure(result, Verdict.ABORTED, self.crashed)
        elif self.abort_criterion is not None:
            result = with_abort(result, self.abort_criterion)
        observed_s = plan.duration_s
        if self.interrupted and self.load_ended_ms is None:
            observed_s = max(0.0, (self.clock_ms() - plan.start_at_ms) / 1000)
        elif self.abort_criterion is not None and self.load_ended_ms is not None:
            observed_s = min(observed_s, max(0.0, (self.load_ended_ms - plan.start_at_ms) / 1000))
        whole_load = not self.interrupted and self.abort_criterion is None
        findings = gate_findings(plan, self.runs, result, self.stream, observed_s, judge_regions=whole_load)
        result = with_gates(result, findings)
        if self.teardown_value is not None:
            result = with_teardown(result, self.teardown_value)
        agent_statuses = {
            name: read_status(workdir.injector(name)) for name, (_, workdir, _) in self.agents.items()
        }
        return replace(
            result,
            clock={
                **self.clock.to_dict(),
                "compensated": self.settings.compensate_clock and self.stream is not None,
            }
            if self.clock is not None and self.clock.offsets_ms
            else None,
            metrics=metrics_summary(agent_statuses, self.writer, self.forwarder)
            if agent_statuses and self.settings.influx
            else None,
            judged_after_s=round(time.monotonic() - collected_at, 3),
        )

    # ------------------------------------------------------------------ the whole run

    def execute(self) -> RunResult:
        """Every phase in order, with the guarantees of the module docstring."""
        with self.interrupts.installed():
            self.preflight()
            self.make_plan()
            with self.interrupts.deferred():
                self.open_run()
            try:
                try:
                    self.interrupts.raise_deferred()
                    self.build()
                    self.provision()
                    self.deploy()
                    self.go()
                    self.run()
                except KeyboardInterrupt:
                    self.interrupts.shield()
                    self.interrupted = True
                    self._record("interrupted", signals=self.interrupts.received)
                    self.observer.phase(
                        "interrupted", "stopping the load; collecting what exists (again: hurry, skip waits)"
                    )
                except InjectorError as exc:
                    self.failure = exc.render()
                except SpikeError as exc:
                    self.failure = exc.render()
                    self.crashed = exc.render()
                except Exception as exc:
                    self.crashed = f"spike failed: {type(exc).__name__}: {exc} (see spike-error.log)"
                    self._keep_traceback()
                self.interrupts.shield()  # from here on, signals never stop the cleanup
                self.failure = self.failure or stop_injectors(
                    [r for r in self.runs if r.handle.poll() is None], self._grace()
                )
                self._safely(self.collect)
            finally:
                self.interrupts.shield()
                self._safely(self.teardown)
            result = self.judge()
            post = PostRun(
                self.settings,
                self.plan,
                self.run_layout,
                self.profile,
                self.writer,
                self.observer,
                source_dir=self.loaded.source.parent,
                compiled=self.compiled,
                start_annotation_error=self.start_annotation,
            )
            for step in self.post_steps:
                result = step(post, result)
            if self.writer is not None:
                self.writer.close()
            self._record("finished", verdict=result.verdict.value, exit_code=int(result.exit_code))
            if self.lock is not None:
                self.lock.release()
            return result

    # ------------------------------------------------------------------ helpers

    def _record(self, phase: str, **details: object) -> None:
        if self.journal is not None:
            self.journal.record(phase, **details)

    def _grace(self) -> float:
        return FORCED_GRACE_S if self.interrupts.forced else self.settings.stop_grace_s

    def _safely(self, phase: Callable[[], None]) -> None:
        """Cleanup phases never end the run: a failure is recorded and the next phase goes on."""
        try:
            phase()
        except Exception as exc:
            self.crashed = self.crashed or f"spike failed in {phase.__name__}: {type(exc).__name__}: {exc}"
            self._keep_traceback()

    def _keep_traceback(self) -> None:
        if self.layout is not None:
            try:
                with (self.layout.root / "spike-error.log").open("a", encoding="utf-8") as handle:
                    handle.write(traceback.format_exc())
            except OSError:
                pass

    def _on_each(
        self, injectors: Sequence[InjectorPlan], action: Callable[[InjectorPlan], T]
    ) -> dict[str, T]:
        """`action` for every injector, at once where the provider allows it; results in plan order."""
        if not self.provider.parallel_launch:
            return {injector.id: action(injector) for injector in injectors}
        with ThreadPoolExecutor(max_workers=min(32, max(1, len(injectors)))) as pool:
            results = list(pool.map(action, injectors))
        return {injector.id: result for injector, result in zip(injectors, results, strict=True)}

    def _start_agents(self) -> dict[str, dict[str, str]]:
        """Start every injector's metrics agent, then wait until each listens; returns Gatling's -D properties."""
        plan, layout, settings = self.plan, self.run_layout, self.settings

        def start(injector: InjectorPlan) -> tuple[InjectorHandle, RunLayout, str]:
            site = self.sites[injector.id]
            workdir = layout.injector(injector.id)
            influx = settings.influx if site.agent_writes_sink else None
            config = write_agent_config(workdir, plan.run_id, injector, influx)
            self.provider.put(injector, config)
            command = agent_command(f"{site.workdir}/{config.name}", site.agent)
            return self.provider.launch(injector, command, workdir, log_name="agent.log"), layout, injector.id

        self.agents.update(self._on_each(plan.injectors, start))
        return {
            injector_id: gatling_graphite_properties(
                wait_until_listening(
                    layout.injector(injector_id), injector_id, handle.poll, self.provider.sync
                )
            )
            for injector_id, (handle, _, _) in self.agents.items()
        }

    def _await_ready(self, handles: dict[str, InjectorHandle], deadline_ms: int) -> set[str]:
        """Wait until every injector waits for the go (or has died); returns the ready ones."""
        ready: set[str] = set()
        beat = Every()
        while True:
            self.provider.sync()
            for injector in self.plan.injectors:
                if injector.id not in ready and console.is_waiting(self.run_layout.console(injector.id)):
                    ready.add(injector.id)
            pending = [i for i in handles if i not in ready and handles[i].poll() is None]
            if not pending or self.clock_ms() >= deadline_ms:
                return ready
            if beat.elapsed_s >= beat.period_s and beat.due():  # from 10 s on, every 10 s
                self.observer.phase(
                    "launch", f"{len(ready)}/{len(handles)} injector(s) ready after {beat.elapsed_s:.0f} s"
                )
            time.sleep(0.05)

    def _check_clock(self, clock: ClockCheck) -> None:
        message = check_clock(
            clock, self.settings.max_clock_offset_ms, compensated=self.settings.compensate_clock
        )
        if message:
            self.observer.phase("clock", message)
