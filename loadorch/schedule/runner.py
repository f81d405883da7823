"""Run a schedule now: lock, missed-run record, the spike subprocess, JUnit, verdict, webhook.

What a scheduled run does, in order:

1. Takes `state_dir()/schedules/<name>.lock` with a non-blocking `flock`. If a run
   of the SAME schedule still holds it, this run is refused (`ScheduleBusyError`,
   exit 2: nothing ran; the refusal is logged in the results' history.jsonl).
   Different schedules have different locks and may overlap.
2. Records missed runs. The rule: take the due times of the cron expression in
   (last start, now], where "last start" is the previous run's start from
   `<name>.state.json` (or the schedule's creation time if it never ran). The
   newest of them is the one this run serves (on time, late after a boot, or
   by hand); every older one had no run and is recorded as missed (in the
   state file, verdict.json and history.jsonl). At most 1000 are listed.
3. Runs `<python> -m loadorch <spike args>` in the schedule's working directory,
   output inherited. A `run` gets `--runs-dir <results>/runs` unless its
   arguments name one.
4. Reads the `summary.json` of the run directory that appeared in the runs dir
   during the run (the newest one), and writes `junit.xml` and `verdict.json`
   next to it (or, when spike wrote no run directory, into
   `<results>/<name>-<UTC time>/`); appends a line to `<results>/history.jsonl`.
5. POSTs the verdict to the schedule's webhook (10 s timeout, 2 retries); a
   failure is written into verdict.json and never changes the exit code.

The exit code is the spike subprocess's own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from loadorch.atomic import write_json_atomic
from loadorch.errors import BadInputError, ExitCode, SpikeError
from loadorch.history.registry import record_missed
from loadorch.run.layout import RunLayout
from loadorch.run.result import RunResult, Verdict
from loadorch.schedule import cron
from loadorch.schedule.install import (
    Schedule,
    definition_path,
    load,
    redact_url,
    schedules_dir,
    validate_name,
)
from loadorch.schedule.results import junit_xml, verdict_record

WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_RETRIES = 2
MISSED_LIMIT = 1000
STATE_MISSED_KEPT = 100


class ScheduleBusyError(BadInputError):
    """A run of the same schedule still holds its lock; this one did not start (exit 2)."""


@dataclass(frozen=True)
class ScheduledRun:
    """The outcome of one `run_now`: spike's exit code and where the results are."""

    exit_code: int
    verdict: dict[str, Any]
    verdict_path: Path
    junit_path: Path
    run_dir: Path | None


def lock_path(name: str) -> Path:
    return schedules_dir() / f"{name}.lock"


def state_path(name: str) -> Path:
    return schedules_dir() / f"{name}.state.json"


@contextlib.contextmanager
def schedule_lock(name: str) -> Iterator[None]:
    """Hold the schedule's exclusive lock, or raise ScheduleBusyError at once."""
    path = lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a+")  # noqa: SIM115 - the lock lives as long as this handle
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ScheduleBusyError(
                f"schedule {name!r} is already running (lock held by pid {holder})",
                where=str(path),
                fix="wait for that run to end; runs of the same schedule never overlap",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the flock


def _read_state(name: str) -> dict[str, Any]:
    try:
        data = json.loads(state_path(name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def missed_due_times(schedule: Schedule, now: datetime, state: dict[str, Any]) -> list[datetime]:
    """Due times that got no run before `now` (see the module docstring for the rule)."""
    baseline_text = state.get("last_started") or schedule.created_at
    try:
        baseline = datetime.fromisoformat(baseline_text)
    except (TypeError, ValueError):
        return []
    due = cron.due_times(schedule.cron, baseline, now, schedule.timezone, limit=MISSED_LIMIT)
    # the newest due time is the one this run serves, unless the list was cut short
    return due if len(due) >= MISSED_LIMIT else due[:-1]


def _option_value(args: Sequence[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def spike_command(schedule: Schedule, command_prefix: Sequence[str] | None = None) -> tuple[list[str], Path]:
    """The argv to run and the runs dir whose new run directory holds the summary."""
    args = list(schedule.spike_args)
    given = _option_value(args, "--runs-dir")
    if given is not None:
        runs_dir = Path(given) if Path(given).is_absolute() else Path(schedule.workdir) / given
    else:
        runs_dir = schedule.results_path() / "runs"
        if args and args[0] == "run":
            args += ["--runs-dir", str(runs_dir)]
    if args and args[0] == "run" and _option_value(args, "--schedule") is None:
        args += ["--schedule", schedule.name]  # the run history records which schedule started it
    prefix = list(command_prefix) if command_prefix else [schedule.python, "-m", "loadorch"]
    return prefix + args, runs_dir


def _profile_name(schedule: Schedule) -> str:
    profile = _option_value(schedule.spike_args, "--profile")
    if profile is None:
        return schedule.name
    return Path(profile).stem if profile.endswith((".yaml", ".yml")) else profile


def _run_dirs(runs_dir: Path) -> set[Path]:
    return {p for p in runs_dir.iterdir() if p.is_dir()} if runs_dir.is_dir() else set()


def _newest_summary(runs_dir: Path, before: set[Path]) -> tuple[Path, dict[str, Any]] | None:
    fresh = [p for p in _run_dirs(runs_dir) - before if RunLayout(p).summary.is_file()]
    for run_dir in sorted(fresh, key=lambda p: RunLayout(p).summary.stat().st_mtime, reverse=True):
        try:
            return run_dir, json.loads(RunLayout(run_dir).summary.read_text())
        except ValueError:
            continue
    return None


def post_webhook(
    url: str, payload: dict[str, Any], *, retries: int = WEBHOOK_RETRIES, retry_delay_s: float = 1.0
) -> dict[str, Any]:
    """POST JSON; the outcome (never an exception) for verdict.json. The URL is recorded redacted."""
    body = json.dumps(payload, sort_keys=True).encode()
    outcome: dict[str, Any] = {"url": redact_url(url), "delivered": False, "attempts": 0, "error": None}
    for attempt in range(1, retries + 2):
        outcome["attempts"] = attempt
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "spike"}
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                outcome.update(delivered=True, status=response.status, error=None)
                return outcome
        except urllib.error.HTTPError as exc:
            outcome.update(status=exc.code, error=f"HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome["error"] = str(getattr(exc, "reason", exc))
        if attempt <= retries:
            time.sleep(retry_delay_s * attempt)
    return outcome


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def _append_history(results: Path, record: dict[str, Any]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "history.jsonl", "a") as history:
        history.write(json.dumps(record, sort_keys=True) + "\n")


def _exit_code(returncode: int) -> int:
    # a signal-killed child reports -N; a shell would say 128+N
    return 128 - returncode if returncode < 0 else returncode


def _resolve(name: str, spike_argv: Sequence[str] | None, results_dir: Path | None) -> tuple[Schedule, bool]:
    """The stored schedule (args and results dir overridable), or an ad hoc one for CI."""
    validate_name(name)
    stored = definition_path(name).exists()
    if stored:
        schedule = load(name)
    elif spike_argv:
        schedule = Schedule(name=name, cron="@daily", spike_args=tuple(spike_argv))
    else:
        schedule = load(name)  # raises the unknown-schedule error
    if spike_argv:
        schedule = replace(schedule, spike_args=tuple(spike_argv))
    if results_dir is not None:
        schedule = replace(schedule, results_dir=str(results_dir.resolve()))
    if not schedule.spike_args:
        raise BadInputError(f"schedule {name!r} has no spike arguments")
    return schedule, stored


def run_now(
    name: str,
    *,
    spike_argv: Sequence[str] | None = None,
    results_dir: Path | None = None,
    command_prefix: Sequence[str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    retry_delay_s: float = 1.0,
) -> ScheduledRun:
    """Run schedule `name` now (see the module docstring); returns spike's exit code and results.

    `spike_argv` replaces the stored spike arguments; with no stored schedule of
    that name it makes an ad hoc one (how an exported CI job runs; no missed-run
    record then). `command_prefix` replaces `<python> -m loadorch` (tests).
    """
    schedule, stored = _resolve(name, spike_argv, results_dir)
    results = schedule.results_path()
    try:
        with schedule_lock(name):
            return _run_locked(schedule, stored, results, command_prefix, clock, retry_delay_s)
    except ScheduleBusyError:
        _append_history(
            results,
            {"event": "refused-overlap", "schedule": name, "at": clock().isoformat(timespec="seconds")},
        )
        raise


def _run_locked(
    schedule: Schedule,
    stored: bool,
    results: Path,
    command_prefix: Sequence[str] | None,
    clock: Callable[[], datetime],
    retry_delay_s: float,
) -> ScheduledRun:
    state = _read_state(schedule.name)
    started = clock()
    missed = [d.isoformat() for d in missed_due_times(schedule, started, state)] if stored else []
    for due in missed:
        _append_history(results, {"event": "missed", "schedule": schedule.name, "due": due})
        with contextlib.suppress(SpikeError):  # the run history has a table for them too
            record_missed(
                schedule.name, int(datetime.fromisoformat(due).timestamp() * 1000), "no run at its due time"
            )

    argv, runs_dir = spike_command(schedule, command_prefix)
    before = _run_dirs(runs_dir)
    failure: str | None = None
    try:
        process = subprocess.Popen(argv, cwd=schedule.workdir)
    except OSError as exc:
        returncode = int(ExitCode.INFRASTRUCTURE)
        failure = f"could not start `{shlex.join(argv)}`: {exc}"
    else:
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            # spike handles Ctrl-C itself (it collects and tears down); wait for it to finish that
            returncode = process.wait()
        returncode = _exit_code(returncode)
    ended = clock()

    found = _newest_summary(runs_dir, before)
    result: RunResult | None = None
    if found is not None:
        run_dir: Path | None = found[0]
        artifacts = found[0]
        try:
            result = RunResult.from_dict(found[1])
        except BadInputError as exc:
            failure = failure or f"its summary.json could not be read: {exc.message}"
    else:
        run_dir = None
        stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        artifacts = results / f"{schedule.name}-{stamp}"
    if result is None:
        # nothing was judged, so nothing passed: whatever spike's exit code, the run is aborted
        result = RunResult(
            run_id=run_dir.name if run_dir else "",
            profile=_profile_name(schedule),
            provider="",
            target="",
            start_at_ms=int(started.timestamp() * 1000),
            duration_s=(ended - started).total_seconds(),
            planned_users=0,
            planned_requests=0,
            verdict=Verdict.ABORTED,
            reasons=(failure or f"spike exited {returncode} and wrote no summary.json under {runs_dir}",),
            run_dir=str(run_dir or ""),
        )
        if returncode == 0:
            returncode = int(ExitCode.INFRASTRUCTURE)
    artifacts.mkdir(parents=True, exist_ok=True)
    junit_path = artifacts / "junit.xml"
    junit_path.write_text(junit_xml(result))
    verdict = verdict_record(
        result,
        schedule=schedule.name,
        exit_code=returncode,
        started=started,
        ended=ended,
        missed=missed,
        junit_path=str(junit_path),
    )
    verdict["command"] = shlex.join(["spike", *schedule.spike_args])
    verdict_path = artifacts / "verdict.json"
    _write_json(verdict_path, verdict)
    if schedule.notify_url:
        verdict["webhook"] = post_webhook(schedule.notify_url, verdict, retry_delay_s=retry_delay_s)
        _write_json(verdict_path, verdict)

    _append_history(
        results,
        {
            "event": "run",
            "schedule": schedule.name,
            "run_id": verdict["run_id"],
            "verdict": verdict["verdict"],
            "exit_code": returncode,
            "started": verdict["started"],
            "verdict_file": str(verdict_path),
        },
    )
    if stored:
        kept_missed = (list(state.get("missed_runs") or []) + missed)[-STATE_MISSED_KEPT:]
        _write_json(
            state_path(schedule.name),
            {
                "last_started": verdict["started"],
                "last_ended": verdict["ended"],
                "last_verdict": verdict["verdict"],
                "last_exit_code": returncode,
                "last_verdict_file": str(verdict_path),
                "missed_runs": kept_missed,
            },
        )
    return ScheduledRun(returncode, verdict, verdict_path, junit_path, run_dir)
