"""After the verdict: the steps that read the typed result (and may adjust it), in order.

spike SLOs and replay fidelity, the baseline check (a regression fails a passing
run), summary.json (the verdict is on disk before anything slow), the run's
InfluxDB points and Grafana annotation, the history entry, Gatling's HTML
report, and summary.json once more with the final state. Each step is a
function `(PostRun, RunResult) -> RunResult`; a failing step is recorded in the
result, never hides the verdict.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from loadorch.atomic import write_json_atomic
from loadorch.dashboards.grafana import annotate
from loadorch.engine.gatling.build import CompiledSimulation
from loadorch.engine.gatling.command import reports_only_command
from loadorch.errors import SpikeError
from loadorch.history.compare import compare_to_baseline
from loadorch.history.registry import history_lines, record_run
from loadorch.history.spike_slos import spike_slo_summary
from loadorch.metrics.run_points import event_line, summary_lines
from loadorch.plan.model import Plan
from loadorch.process import Command, spawn
from loadorch.profiles.model import Profile, ReplayShape
from loadorch.replay.fidelity import read_recorded, replay_fidelity
from loadorch.run.adjust import finished, with_regression, with_report
from loadorch.run.layout import RunLayout
from loadorch.run.result import ReportState, RunResult, RunState
from loadorch.run.settings import RunObserver, RunSettings
from loadorch.telemetry import RunWriter, with_pending
from loadorch.verdict import achieved_users_per_second

ASSERTIONS_FAILED = 2  # Gatling's exit status when its own assertions fail
REPORT_TIMEOUT_S = 1800.0


@dataclass
class PostRun:
    """What the post-run steps share: the run's settings, plan, directory and metrics writer."""

    settings: RunSettings
    plan: Plan
    layout: RunLayout
    profile: Profile
    writer: RunWriter | None
    observer: RunObserver
    source_dir: Path
    compiled: CompiledSimulation | None = None
    start_annotation_error: str | None = None
    report_proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0


Step = Callable[[PostRun, RunResult], RunResult]


def spike_slos(post: PostRun, result: RunResult) -> RunResult:
    if result.stats is None or not result.stats.requests:
        return result
    extra: dict[str, object] = {"spike_slos": spike_slo_summary(result.stats, post.plan, post.profile.slos)}
    shape = post.profile.shape
    if isinstance(shape, ReplayShape) and shape.recorded_file is not None:
        # a replay: how closely the achieved arrivals followed the recording it came from
        recorded = post.source_dir / shape.recorded_file
        recording = read_recorded(recorded, scale=shape.scale, speedup=shape.speedup)
        extra["replay_fidelity"] = replay_fidelity(recording, achieved_users_per_second(result.stats))
    return replace(result, **extra)  # type: ignore[arg-type]


def baseline(post: PostRun, result: RunResult) -> RunResult:
    settings = post.settings
    if settings.baseline is None or settings.history_db is None:
        return result
    try:
        comparison = compare_to_baseline(
            result,
            settings.baseline,
            post.plan.profile_name,
            plan_digest=post.plan.profile_digest,
            provider=post.plan.provider,
            db=settings.history_db,
        )
    except SpikeError as exc:
        return replace(result, regression={"error": exc.render()})
    if comparison is None:
        return replace(result, regression={"note": f"no baseline ({settings.baseline}) to compare with yet"})
    return with_regression(result, comparison.to_dict(), regressed=comparison.verdict == "regressed")


def prepare_report(post: PostRun, result: RunResult) -> RunResult:
    """Gatling's merged HTML report will be built over every injector's log: say so, link the logs."""
    settings, layout = post.settings, post.layout
    logs = [i for i in result.injectors if i.log and os.path.isfile(i.log)]
    if settings.html_report == "off" or not logs or post.compiled is None:
        return with_report(result, ReportState("off"))
    layout.report_dir.mkdir(exist_ok=True)
    for item in logs:
        assert item.log is not None
        _link_or_copy(item.log, layout.merged_log(item.id))
    return with_report(result, ReportState("building", str(layout.report_index)))


def start_report(post: PostRun, result: RunResult) -> RunResult:
    """The report JVM starts once the verdict is on disk, and runs while the other steps go on."""
    if result.report.state != "building" or post.compiled is None:
        return result
    settings, layout = post.settings, post.layout
    command = reports_only_command(
        post.compiled.classpath(), layout.root, "report", java=settings.java, jvm_options=settings.jvm_options
    )
    background = settings.html_report == "background"
    try:
        post.report_proc = spawn(
            Command(command.argv, command.cwd, command.env),
            output=layout.report_console,
            # in the background the report outlives spike; when waiting it dies with spike (no orphan JVM)
            new_session=background,
            on_parent_death=None if background else signal.SIGKILL,
            what="Gatling's report JVM",
        )
    except SpikeError as exc:
        return with_report(result, ReportState(f"failed: {exc.message}"))
    post.started = time.monotonic()
    return result


def write_summary(post: PostRun, result: RunResult) -> RunResult:
    """summary.json, atomically: the verdict is on disk before anything slow happens."""
    write_json_atomic(post.layout.summary, result.to_dict())
    return result


def run_points(post: PostRun, result: RunResult) -> RunResult:
    writer = post.writer
    if writer is None:
        return result
    now_ms = int(time.time() * 1000)
    lines = [event_line(post.plan.run_id, "end", result.reason, now_ms)]
    if result.stats is not None and result.stats.requests:
        lines += summary_lines(post.plan, result.stats, result.verdict.value, now_ms)
    lines.append(
        event_line(post.plan.run_id, "verdict", result.reason, now_ms + 1, verdict=result.verdict.value)
    )
    writer.write(lines)
    if result.metrics is not None:
        metrics = dict(result.metrics)
        metrics["orchestrator_points_written"] = writer.written
        metrics["orchestrator_points_unsent"] = writer.unsent
        result = replace(result, metrics=metrics)
    return result


def annotate_start(settings: RunSettings, plan: Plan) -> str | None:
    """The run's start in Grafana, when one is configured; returns why it failed (never fatal)."""
    if not settings.grafana_url or settings.grafana_key is None:
        return None
    text = f"spike run {plan.run_id} starts ({plan.profile_name})"
    try:
        annotate(
            settings.grafana_url, settings.grafana_key, plan.run_id, plan.start_at_ms, text, tags=("start",)
        )
    except SpikeError as exc:
        return exc.message
    return None


def grafana(post: PostRun, result: RunResult) -> RunResult:
    settings = post.settings
    if not settings.grafana_url or settings.grafana_key is None:
        return result
    text = f"spike run {post.plan.run_id}: {result.verdict.value} ({result.reason})"
    try:
        annotate(
            settings.grafana_url,
            settings.grafana_key,
            post.plan.run_id,
            int(time.time() * 1000),
            text,
            tags=("end",),
        )
    except SpikeError as exc:
        return replace(result, grafana_annotations="end failed: " + exc.message)
    if post.start_annotation_error:
        return replace(result, grafana_annotations="start failed: " + post.start_annotation_error)
    return replace(result, grafana_annotations="added")


def history(post: PostRun, result: RunResult) -> RunResult:
    settings = post.settings
    if settings.history_db is None:
        return result
    try:
        recorded = replace(result, history=str(settings.history_db))
        record = record_run(
            recorded,
            profile=post.plan.profile_name,
            plan_digest=post.plan.profile_digest,
            provider=post.plan.provider,
            schedule=settings.schedule,
            db=settings.history_db,
        )
    except SpikeError as exc:
        return replace(result, history=f"not recorded: {exc.message}")
    if post.writer is not None:
        post.writer.write(history_lines(record))
    return recorded


def pending_metrics(post: PostRun, result: RunResult) -> RunResult:
    """Points not in InfluxDB, counted from the run directory after the last point spike writes."""
    if result.metrics is None:
        return result
    return replace(result, metrics=with_pending(result.metrics, post.layout.root))


def wait_report(post: PostRun, result: RunResult) -> RunResult:
    proc = post.report_proc
    if proc is None or post.settings.html_report != "wait":
        return result
    post.observer.phase("report", "Gatling is writing the merged HTML report")
    try:
        proc.wait(timeout=REPORT_TIMEOUT_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()
    # Gatling exits 2 when the simulation's own assertions failed; the report is written anyway
    index = post.layout.report_index
    done = proc.returncode in (0, ASSERTIONS_FAILED) and index.is_file()
    state = "built" if done else f"failed (exit {proc.returncode}, see {post.layout.report_console.name})"
    return with_report(
        result, ReportState(state, str(index) if done else None, round(time.monotonic() - post.started, 3))
    )


def finish(post: PostRun, result: RunResult) -> RunResult:
    done = finished(result) if result.state is not RunState.FINISHED else result
    write_json_atomic(post.layout.summary, done.to_dict())
    return done


def default_post_steps() -> list[Step]:
    return [
        spike_slos,
        baseline,
        prepare_report,
        write_summary,
        start_report,
        run_points,
        grafana,
        history,
        pending_metrics,
        wait_report,
        finish,
    ]


def _link_or_copy(src: str, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
