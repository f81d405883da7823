"""What changes a judged result afterwards: each a function from a result to a new result.

Validity gates, a stop criterion, a regression against a baseline, an unclean
teardown: the verdict a person acts on is the one these leave, and summary.json,
the history, JUnit and the exit code all read that same value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from loadorch.run.result import GateFinding, ReportState, RunResult, RunState, Teardown, Verdict

# a verdict that already says "do not trust these figures as a pass" is not made milder by a gate
_WORSE_THAN_INVALID = (Verdict.INTERRUPTED, Verdict.ABORTED)


def with_gates(result: RunResult, findings: Sequence[GateFinding]) -> RunResult:
    """Validity gates: a run whose figures were not measured as planned is invalid, never passed.

    A failed or degraded run with a gate finding is invalid too (its SLO figures
    are as untrustworthy as a pass would be); interrupted and aborted stay.
    """
    if not findings:
        return result
    gated = replace(result, gates=tuple(findings))
    invalidating = [f for f in findings if f.invalidates]
    if result.verdict in _WORSE_THAN_INVALID or not invalidating:
        return gated
    named = "; ".join(f.describe() for f in invalidating)
    return replace(
        gated,
        verdict=Verdict.INVALID,
        reasons=(f"not a valid measurement: {named}", *result.reasons),
    )


def with_abort(result: RunResult, criterion: str) -> RunResult:
    """A stop criterion ended the storm early: the target was already down."""
    return replace(
        result,
        verdict=Verdict.ABORTED,
        abort_criterion=criterion,
        reasons=(f"load stopped early: {criterion}", *result.reasons),
    )


def with_failure(result: RunResult, verdict: Verdict, reason: str) -> RunResult:
    """Something outside the load ended the run (a full disk, a crash found by recovery)."""
    return replace(result, verdict=verdict, reasons=(reason, *result.reasons))


def with_regression(result: RunResult, comparison: Mapping[str, Any], *, regressed: bool) -> RunResult:
    """A regression against the baseline fails a run that otherwise passed; a failing run already fails."""
    compared = replace(result, regression=dict(comparison))
    if not regressed or result.verdict is not Verdict.PASSED:
        return compared
    names = ", ".join(comparison.get("regressed_requests") or ["all requests"])
    return replace(
        compared,
        verdict=Verdict.FAILED,
        reasons=(f"regressed against {comparison.get('baseline_run_id')}: {names}",),
    )


def with_teardown(result: RunResult, teardown: Teardown) -> RunResult:
    """An unverified teardown is the headline: something may still run or be billed (exit 3)."""
    done = replace(result, teardown=teardown)
    if teardown.clean:
        return done
    return replace(done, reasons=(f"teardown incomplete: {teardown.summary}", *result.reasons))


def with_report(result: RunResult, report: ReportState) -> RunResult:
    return replace(result, report=report)


def finished(result: RunResult) -> RunResult:
    return replace(result, state=RunState.FINISHED)
