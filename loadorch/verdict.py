"""Judge a run (pure): SLO verdicts, fidelity to the plan, injector health, the typed result.

spike's verdict comes from the exact merged statistics of every injector's
log, not from each injector's own Gatling assertions (which see only that
injector's share and use an approximate t-digest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from loadorch.analysis.stats import Latency, MergedStats
from loadorch.plan.model import Plan
from loadorch.profiles.model import Slos
from loadorch.run.result import (
    Fidelity,
    InjectorOutcome,
    RunResult,
    ScopeLatency,
    SloResult,
    StartSkew,
    Verdict,
)

MIN_PLANNED_USERS_PER_S = 1.0
# an injector stopped by spike after starting this share of its planned users did its part: it was
# only waiting for the target's answers (a hung target), which is the target's failure, not its own
DELIVERED_IN_FULL = 0.99

__all__ = ["SloResult", "achieved_users_per_second", "evaluate_slos", "fidelity_mape_pct", "judge"]


@dataclass(frozen=True)
class RunContext:
    """What judging needs beside the statistics: how the run ended."""

    run_dir: str
    interrupted: bool = False
    failure: str | None = None  # an infrastructure failure that ended the run early


def evaluate_slos(slos: Slos, stats: MergedStats) -> list[SloResult]:
    results = []
    for slo in slos.latency:
        actual = stats.percentile(slo.percentile, request=slo.request)
        scope = slo.request or "all requests"
        results.append(
            SloResult(
                f"p{slo.percentile} latency of {scope} <= {slo.max_ms} ms",
                slo.max_ms,
                actual,
                actual is not None and actual <= slo.max_ms,
            )
        )
    if slos.error_rate_max is not None:
        rate = stats.requests_ko / stats.requests if stats.requests else None
        results.append(
            SloResult(
                f"error rate <= {slos.error_rate_max:.2%}",
                slos.error_rate_max,
                None if rate is None else round(rate, 6),
                rate is not None and rate <= slos.error_rate_max,
            )
        )
    return results


def fidelity_mape_pct(planned: list[float], achieved: list[int]) -> float | None:
    """Mean absolute percentage error of achieved vs planned arrivals per second.

    Only seconds where the plan is at least 1 user/s count; None if there are none.
    """
    errors = [
        abs((achieved[i] if i < len(achieved) else 0) - p) / p
        for i, p in enumerate(planned)
        if p >= MIN_PLANNED_USERS_PER_S
    ]
    return round(100 * sum(errors) / len(errors), 3) if errors else None


def achieved_users_per_second(stats: MergedStats, region: str | None = None) -> list[int]:
    out = [0] * (stats.per_second[-1].second + 1 if stats.per_second else 0)
    for row in stats.per_second:
        if region is None:
            out[row.second] = row.users_started
        elif region in row.regions:
            out[row.second] = row.regions[region].users_started
    return out


def _scope(lat: Latency) -> ScopeLatency:
    return ScopeLatency(lat.all, lat.ok, lat.ko)


def _with_shares(plan: Plan, stats: MergedStats | None, item: InjectorOutcome) -> InjectorOutcome:
    """The injector's delivered share of its plan, and its state judged by what it delivered."""
    planned = next(i.planned_users for i in plan.injectors if i.id == item.id)
    got = next((s for s in stats.injectors if s.injector_id == item.id), None) if stats else None
    started = got.users_started if got else 0
    share = round(started / planned, 4) if planned else None
    state = item.state
    if state == "stopped" and share is not None and share >= DELIVERED_IN_FULL:
        state = "completed"  # stopped only while waiting for answers that never came
    return replace(
        item,
        state=state,
        planned_users=round(planned, 1),
        users_started=started,
        delivered_share=share,
        requests=got.requests if got else 0,
        # first request vs the shared start (includes the curve's own wait for a first arrival)
        first_request_offset_ms=got.start_skew_ms if got else None,
        last_request_end_ms=got.last_request_end_ms if got else None,
    )


def judge(
    plan: Plan,
    slos: Slos,
    stats: MergedStats | None,
    injectors: Sequence[InjectorOutcome],
    context: RunContext,
) -> RunResult:
    """The run's verdict from the exact merged statistics (pure; the inputs are not changed)."""
    outcomes = tuple(_with_shares(plan, stats, i) for i in injectors)
    base = RunResult(
        run_id=plan.run_id,
        profile=plan.profile_name,
        provider=plan.provider,
        target=plan.base_url,
        start_at_ms=plan.start_at_ms,
        duration_s=plan.duration_s,
        planned_users=plan.planned_users,
        planned_requests=plan.planned_requests,
        verdict=Verdict.INVALID,
        reasons=(),
        run_dir=context.run_dir,
        injectors=outcomes,
        stats=stats,
    )
    if stats is None or stats.requests == 0:
        failed = [i for i in outcomes if i.state == "failed"]
        reason = context.failure or "no request was recorded by any injector: nothing was measured"
        if failed and not context.failure:
            names = ", ".join(f"{i.id} (exit {i.exit_code})" for i in failed)
            reason += f"; injector(s) ended before sending any: {names}; see their console.log"
        verdict = Verdict.INTERRUPTED if context.interrupted else Verdict.INVALID
        return replace(base, verdict=verdict, reasons=(reason,))

    slo_results = tuple(evaluate_slos(slos, stats))
    unanswered = stats.users_started - stats.users_ended
    if unanswered > 0 and not context.interrupted and any(i.state == "stopped" or i.note for i in injectors):
        # spike had to stop injectors whose users still waited for answers: those requests were never
        # recorded, so the figures above alone would look better than what the target did
        slo_results += (
            SloResult(
                f"every request answered ({unanswered:,} user(s) still waiting when stopped)",
                0,
                unanswered,
                False,
            ),
        )
    planned_ps = plan.curve.users_per_second()
    achieved_ps = achieved_users_per_second(stats)
    margins = [i.ready_margin_ms for i in outcomes if i.ready_margin_ms is not None]
    firsts = [i.first_request_offset_ms for i in outcomes if i.first_request_offset_ms is not None]
    releases = [i.release_offset_ms for i in outcomes if i.release_offset_ms is not None]
    measured = replace(
        base,
        requests_total=stats.requests,
        requests_ok=stats.requests_ok,
        requests_ko=stats.requests_ko,
        users_started=stats.users_started,
        users_ended=stats.users_ended,
        latency=_scope(stats.latency),
        by_request={name: _scope(lat) for name, lat in stats.by_request.items()},
        by_region={name: _scope(lat) for name, lat in stats.by_region.items()},
        errors=stats.errors,
        slos=slo_results,
        fidelity=Fidelity(
            mape_pct=fidelity_mape_pct(planned_ps, achieved_ps),
            by_region_mape_pct={
                r.name: fidelity_mape_pct(
                    r.curve.users_per_second(), achieved_users_per_second(stats, r.name)
                )
                for r in plan.regions
            },
            achieved_vs_planned_requests=round(stats.requests / plan.planned_requests, 4)
            if plan.planned_requests
            else None,
            per_second=tuple(
                (i, round(p, 2), achieved_ps[i] if i < len(achieved_ps) else 0)
                for i, p in enumerate(planned_ps)
            ),
        ),
        skew=StartSkew(
            first_request_offset_min=min(firsts) if firsts else None,
            first_request_offset_max=max(firsts) if firsts else None,
            first_request_spread=max(firsts) - min(firsts) if firsts else None,
            ready_margin_min=min(margins) if margins else None,
            # when the start gates opened (each on its own clock, offsets compensated): spike's part
            release_spread=max(releases) - min(releases) if releases else None,
        ),
        late_injectors=tuple(i.id for i in outcomes if (i.ready_margin_ms or 0) < 0),
        malformed_lines=stats.malformed_lines,
    )

    failed_injectors = [i for i in outcomes if i.state != "completed"]
    failed_slos = [r.name for r in slo_results if not r.passed]
    if context.interrupted:
        return replace(
            measured,
            verdict=Verdict.INTERRUPTED,
            reasons=("stopped by Ctrl-C, SIGTERM or SIGHUP; partial results",),
        )
    if context.failure or failed_injectors:
        names = ", ".join(
            f"{i.id} ({i.state}, exit {i.exit_code}, delivered {_pct(i.delivered_share)} of its plan)"
            for i in failed_injectors
        )
        reasons = [context.failure or f"injector(s) did not complete: {names}"]
        if failed_slos:
            reasons.append("SLO failed: " + "; ".join(failed_slos))
        return replace(measured, verdict=Verdict.DEGRADED, reasons=tuple(reasons))
    if failed_slos:
        return replace(measured, verdict=Verdict.FAILED, reasons=("SLO failed: " + "; ".join(failed_slos),))
    return replace(measured, verdict=Verdict.PASSED, reasons=("every SLO met",))


def _pct(value: float | None) -> str:
    return "?" if value is None or math.isnan(value) else f"{value:.0%}"
