"""Finish a run whose spike died (SIGKILL, OOM, a reboot): stop, collect, destroy, judge, record.

A run directory is unfinished when its journal does not end in `finished` and no
live spike holds its lock (`loadorch.run.journal`). Recovery then:

1. stops every process of the run still alive on this machine (local injectors and
   agents die with spike by themselves; this catches anything that did not);
   remote injectors stop on their own when the lease spike renewed runs out;
2. destroys the fleet from the run's Terraform state, if it has one (aws);
3. reads whatever results exist (the local logs, or the mirrors of remote ones);
4. judges them, with the verdict `aborted` and the phase spike died in as the
   reason, writes summary.json and records the run in the history.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from loadorch.analysis.simlog import LogAccumulator, merge
from loadorch.atomic import write_json_atomic
from loadorch.engine.gatling import console
from loadorch.errors import BadInputError, SpikeError
from loadorch.history.registry import record_run
from loadorch.plan.model import Plan
from loadorch.profiles.loader import load_profile
from loadorch.profiles.model import Slos
from loadorch.run.adjust import finished, with_failure, with_teardown
from loadorch.run.journal import Journal, RunLock, last_entry, read_journal, run_entries, run_entry
from loadorch.run.layout import RunLayout
from loadorch.run.result import InjectorOutcome, RunResult, Teardown, Verdict
from loadorch.verdict import RunContext, judge

STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Recovered:
    layout: RunLayout
    result: RunResult
    stopped_processes: int


def _processes_of(layout: RunLayout) -> list[psutil.Process]:
    """Processes on this machine whose command line names the run directory (injectors, agents, report)."""
    marker = str(layout.root)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
    return found


def stop_processes(layout: RunLayout) -> int:
    procs = _processes_of(layout)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    return len(procs)


def destroy_fleet(layout: RunLayout, regions: Sequence[str] = (), endpoint: str | None = None) -> Teardown:
    """The aws fleet from the run's Terraform state, then whatever still carries the run's tag.

    An interrupted apply can have created a resource that never reached the state (a create
    call in flight when Terraform stopped), so destroy alone cannot be trusted: everything tagged
    with the run in its regions is listed, removed, and listed again. Nothing to do for the other
    providers.
    """
    done = _terraform_destroy(layout)
    if not done.clean or not regions:
        return done
    from loadorch.cloud.leftovers import find_run_resources
    from loadorch.cloud.reaper import reap

    try:
        left = find_run_resources(layout.run_id, regions, endpoint)
        if left:
            reap(left, endpoint)
            left = find_run_resources(layout.run_id, regions, endpoint)
    except Exception as exc:  # boto3's errors, unreachable endpoints: say so, never claim clean
        return Teardown(
            f"{done.summary}; the leftovers check failed ({type(exc).__name__}: {exc}); "
            f"run `spike reap --run {layout.run_id} --yes`",
            False,
        )
    if left:
        names = ", ".join(f"{r.region}/{r.id}" for r in left)
        return Teardown(
            f"{done.summary}; still tagged with the run: {names}; run `spike reap --run {layout.run_id} --yes`",
            False,
        )
    from loadorch.providers.aws import forget_run_key

    forgotten = forget_run_key(layout.root / "ssh" / "id_ed25519")
    return Teardown(
        f"{done.summary}; nothing tagged SpikeRunId={layout.run_id} remains in {', '.join(regions)}"
        + (f"; {forgotten}" if forgotten else ""),
        True,
    )


def _terraform_destroy(layout: RunLayout) -> Teardown:
    state = layout.terraform_dir / "terraform.tfstate"
    if not state.is_file():
        return Teardown("no cloud resources in this run's state", clean=True)
    from loadorch.providers.terraform.runner import TerraformWorkspace

    workspace = TerraformWorkspace(layout.terraform_dir, env={})
    try:
        run = workspace.destroy()
    except SpikeError as exc:
        return Teardown(
            f"terraform destroy failed: {exc.message}; run `spike reap --run {layout.run_id} --yes`", False
        )
    if run.returncode != 0:
        return Teardown(
            f"terraform destroy failed (exit {run.returncode}); run `spike reap --run {layout.run_id} --yes`",
            False,
        )
    return Teardown("terraform destroyed the fleet from the run's state", clean=True)


def _recover_aws_results(plan: Plan, layout: RunLayout, endpoint: str | None) -> str:
    """Reach the run's EC2 hosts again from its Terraform state (host keys pinned from the console
    again): stop what is left, fetch every injector's results. Says what it did."""
    from loadorch.paths import build_cache_dir
    from loadorch.providers.aws import AwsProvider, AwsSettings

    provider = AwsProvider(
        AwsSettings(endpoint=endpoint, host_key_timeout_s=60.0, ssh_boot_wait_s=30.0),
        cache_dir=build_cache_dir(),
    )
    try:
        notes = provider.recover_results(plan, layout.root)
    except Exception as exc:  # the state unreadable, the endpoint gone: the destroy still goes on
        return f"the hosts' results could not be fetched ({type(exc).__name__}: {exc})"
    if notes:
        return "results not fetched from every host: " + "; ".join(notes)
    return f"every host answered: what was left was stopped, results fetched from {len(plan.injectors)} injector(s)"


def _recover_static(plan: Plan, layout: RunLayout, inventory: Path) -> Teardown:
    """Reach the run's SSH hosts again: stop what is left, fetch every injector's results."""
    from loadorch.paths import build_cache_dir
    from loadorch.providers.static import StaticProvider

    try:
        provider = StaticProvider(inventory, cache_dir=build_cache_dir())
    except SpikeError as exc:
        return Teardown(
            f"the inventory {inventory} could not be read ({exc.message}); the hosts' leases stop their processes",
            False,
        )
    notes = provider.recover_results(plan, layout.root)
    if notes:
        return Teardown("; ".join(notes) + "; the hosts' leases stop what is left there", False)
    return Teardown(
        f"every host answered: what was left was stopped, results fetched from {len(plan.injectors)} injector(s)",
        True,
    )


def _slos(source: str | None, layout: RunLayout) -> Slos:
    for candidate in (source, str(layout.profile)):
        if candidate and Path(candidate).is_file():
            with contextlib.suppress(SpikeError):
                return load_profile(Path(candidate)).profile.slos
    return Slos()


def recover(layout: RunLayout, *, history_db: Path | None = None) -> Recovered:
    """Finish one unfinished run (see the module docstring); refuses a run that is live or finished."""
    entry = run_entry(layout)
    if entry.state == "running":
        raise BadInputError(f"run {layout.run_id} is still running (a live spike holds its lock)")
    if entry.state == "finished":
        raise BadInputError(f"run {layout.run_id} already finished", fix="`spike runs` lists unfinished runs")
    lock = RunLock(layout).acquire()  # no second recovery at the same time
    try:
        return _recover(layout, history_db)
    finally:
        lock.release()


def _recover(layout: RunLayout, history_db: Path | None) -> Recovered:
    entries = read_journal(layout)
    journal = Journal(layout)
    planned = last_entry(entries, "planned") or {}
    go = last_entry(entries, "go")
    died_in = entries[-1]["phase"] if entries else "an unknown phase"
    pid = entries[-1].get("pid") if entries else None
    journal.record("recovering", died_in=died_in)
    stopped = stop_processes(layout)
    # only an aws run has cloud resources whose tags can be checked
    regions = _plan_regions(layout) if planned.get("provider") == "aws" else ()
    endpoint = planned.get("aws_endpoint")
    from loadorch.cloud.aws import AwsAccount, account_scope

    # the run's own account (its role, its profiles), whatever this process acts in otherwise
    with account_scope(AwsAccount.from_dict(planned.get("aws_account")).for_run(layout.run_id)):
        fetched = None
        if go is not None and regions and layout.plan.is_file():
            # the EC2 hosts still hold every injector's results: bring them home before destroying
            plan_now = Plan.from_dict(json.loads(layout.plan.read_text()))
            fetched = _recover_aws_results(plan_now, layout, str(endpoint) if endpoint else None)
        teardown = destroy_fleet(layout, regions, str(endpoint) if endpoint else None)
        if fetched is not None:
            teardown = Teardown(f"{fetched}; {teardown.summary}", teardown.clean, dict(teardown.details))
    judged = _judged_summary(layout)
    if judged is not None:
        # spike died after its verdict was on disk (writing the HTML report, recording history):
        # the verdict stands; only what was left undone is finished here
        report = judged.report
        if report.state == "building":
            report = replace(report, state="failed (spike died while Gatling was writing it)", path=None)
        result = replace(judged, report=report)
        return _record(layout, journal, result, planned, history_db, stopped, judged.history is None)
    if not layout.plan.is_file():
        raise BadInputError(
            f"run {layout.run_id} has no plan.json: nothing to recover", where=str(layout.root)
        )
    plan = Plan.from_dict(json.loads(layout.plan.read_text()))
    if go is not None and planned.get("provider") == "static" and planned.get("inventory"):
        teardown = _recover_static(plan, layout, Path(str(planned["inventory"])))
    offsets: dict[str, int] = dict((go or {}).get("offsets") or {})
    runs = []
    for injector in plan.injectors:
        acc = LogAccumulator(injector.id, injector.region, plan.start_at_ms, int(offsets.get(injector.id, 0)))
        logs = sorted((layout.injector(injector.id) / "results").glob("*/simulation.log"))
        if go is not None and logs:
            with contextlib.suppress(OSError):
                acc.read_file(logs[0])
        acc.finish()
        runs.append((injector, acc, str(logs[0]) if logs else None))
    stats = merge([acc for _, acc, _ in runs]) if go is not None else None
    outcomes = [
        InjectorOutcome(
            id=injector.id,
            region=injector.region,
            state="stopped",
            exit_code=None,
            planned_users=injector.planned_users,
            log=log,
            ready_margin_ms=console.ready_margin_ms(layout.console(injector.id)),
            release_offset_ms=console.release_offset_ms(layout.console(injector.id), acc.origin_ms),
        )
        for injector, acc, log in runs
    ]
    result = judge(
        plan, _slos(planned.get("profile_source"), layout), stats, outcomes, RunContext(str(layout.root))
    )
    reason = f"spike (pid {pid}) died during {died_in!r}; recovered at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    result = with_failure(result, Verdict.ABORTED, reason)
    result = with_teardown(result, teardown)
    return _record(layout, journal, result, planned, history_db, stopped, True)


def _plan_regions(layout: RunLayout) -> tuple[str, ...]:
    try:
        return tuple(r["name"] for r in json.loads(layout.plan.read_text())["regions"])
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def _judged_summary(layout: RunLayout) -> RunResult | None:
    try:
        data = json.loads(layout.summary.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("state") != "judged":
        return None
    try:
        return RunResult.from_dict(data)
    except BadInputError:
        return None


def _record(
    layout: RunLayout,
    journal: Journal,
    result: RunResult,
    planned: dict[str, object],
    history_db: Path | None,
    stopped: int,
    record: bool,
) -> Recovered:
    db = history_db or (Path(str(planned["history_db"])) if planned.get("history_db") else None)
    if db is not None and record:
        try:
            record_run(
                replace(result, history=str(db)),
                profile=result.profile,
                plan_digest=str(planned.get("plan_digest") or ""),
                provider=result.provider,
                schedule=str(planned["schedule"]) if planned.get("schedule") else None,
                db=db,
            )
            result = replace(result, history=str(db))
        except SpikeError as exc:
            result = replace(result, history=f"not recorded: {exc.message}")
    result = finished(result)
    write_json_atomic(layout.summary, result.to_dict())
    journal.record("finished", verdict=result.verdict.value, exit_code=int(result.exit_code), recovered=True)
    return Recovered(layout, result, stopped)


def recover_all(runs_dir: Path, *, history_db: Path | None = None) -> list[Recovered]:
    """Every unfinished run under `runs_dir` (what the next spike command does by itself)."""
    done = []
    for entry in run_entries(runs_dir):
        if entry.state == "unfinished":
            with contextlib.suppress(BlockingIOError, BadInputError):
                done.append(recover(entry.layout, history_db=history_db))
    return done
