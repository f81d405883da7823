"""Judge a run (pure): SLO verdicts, fidelity to the plan, injector health, exit code.

spike's verdict comes from the exact merged statistics of every injector's
log, not from each injector's own Gatling assertions (which see only that
injector's share and use an approximate t-digest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loadorch.analysis.stats import REPORT_PERCENTILES, MergedStats
from loadorch.errors import ExitCode
from loadorch.plan.model import Plan
from loadorch.profiles.model import Slos

MIN_PLANNED_USERS_PER_S = 1.0


@dataclass(frozen=True)
class SloResult:
    name: str
    threshold: float
    actual: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "actual": self.actual, "passed": self.passed}


@dataclass(frozen=True)
class Verdict:
    verdict: str  # passed | failed | degraded | interrupted | no-data
    reason: str
    exit_code: ExitCode
    summary: dict[str, Any]


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


def judge(
    plan: Plan,
    slos: Slos,
    stats: MergedStats | None,
    injectors: list[dict[str, Any]],
    *,
    interrupted: bool,
    failure: str | None,
) -> Verdict:
    """The run's verdict and the content of summary.json."""
    summary: dict[str, Any] = {
        "run_id": plan.run_id,
        "profile": plan.profile_name,
        "provider": plan.provider,
        "target": plan.base_url,
        "start_at_ms": plan.start_at_ms,
        "duration_s": plan.duration_s,
        "planned_users": round(plan.planned_users, 1),
        "planned_requests": round(plan.planned_requests, 1),
    }
    by_id = {i.id: i for i in plan.injectors}
    if stats is not None:
        per_injector = {s.injector_id: s for s in stats.injectors}
        for item in injectors:
            planned = by_id[item["id"]].planned_users
            got = per_injector.get(item["id"])
            item["planned_users"] = round(planned, 1)
            item["users_started"] = got.users_started if got else 0
            item["delivered_share"] = (
                round((got.users_started if got else 0) / planned, 4) if planned else None
            )
            item["requests"] = got.requests if got else 0
            # first request vs the shared start (includes the curve's own wait for a first arrival)
            item["first_request_offset_ms"] = got.start_skew_ms if got else None
            item["last_request_end_ms"] = got.last_request_end_ms if got else None
    summary["injectors"] = injectors

    if stats is None or stats.requests == 0:
        reason = failure or "no request was recorded by any injector"
        summary.update(verdict="no-data", reason=reason, exit_code=int(ExitCode.INFRASTRUCTURE))
        if interrupted:
            summary.update(verdict="interrupted", exit_code=int(ExitCode.INTERRUPTED))
            return Verdict("interrupted", reason, ExitCode.INTERRUPTED, summary)
        return Verdict("no-data", reason, ExitCode.INFRASTRUCTURE, summary)

    slo_results = evaluate_slos(slos, stats)
    planned_ps = plan.curve.users_per_second()
    achieved_ps = achieved_users_per_second(stats)
    margins = [i["ready_margin_ms"] for i in injectors if i.get("ready_margin_ms") is not None]
    firsts = [i["first_request_offset_ms"] for i in injectors if i.get("first_request_offset_ms") is not None]
    releases = [i["release_offset_ms"] for i in injectors if i.get("release_offset_ms") is not None]
    summary.update(
        requests={"total": stats.requests, "ok": stats.requests_ok, "ko": stats.requests_ko},
        users={"started": stats.users_started, "ended": stats.users_ended},
        achieved_vs_planned_requests=round(stats.requests / plan.planned_requests, 4)
        if plan.planned_requests
        else None,
        fidelity_mape_pct=fidelity_mape_pct(planned_ps, achieved_ps),
        fidelity_by_region_mape_pct={
            r.name: fidelity_mape_pct(r.curve.users_per_second(), achieved_users_per_second(stats, r.name))
            for r in plan.regions
        },
        per_second=[
            {
                "second": i,
                "planned_users": round(p, 2),
                "achieved_users": achieved_ps[i] if i < len(achieved_ps) else 0,
            }
            for i, p in enumerate(planned_ps)
        ],
        start_skew_ms={
            "first_request_offset_max": max(firsts) if firsts else None,
            "first_request_offset_min": min(firsts) if firsts else None,
            "first_request_spread": max(firsts) - min(firsts) if firsts else None,
            "ready_margin_min": min(margins) if margins else None,
            # when the start gates opened (each on its own clock, offsets compensated): spike's part
            "release_spread": max(releases) - min(releases) if releases else None,
        },
        late_injectors=[i["id"] for i in injectors if (i.get("ready_margin_ms") or 0) < 0],
        latency=stats.latency.to_dict(),
        by_request={name: lat.to_dict() for name, lat in sorted(stats.by_request.items())},
        by_region={name: lat.to_dict() for name, lat in sorted(stats.by_region.items())},
        errors=[e.to_dict() for e in stats.errors],
        slos=[r.to_dict() for r in slo_results],
        malformed_lines=stats.malformed_lines,
        latency_rows=_latency_rows(stats),
    )

    failed_injectors = [i for i in injectors if i["state"] != "completed"]
    failed_slos = [r.name for r in slo_results if not r.passed]
    if interrupted:
        verdict, reason, code = (
            "interrupted",
            "stopped by Ctrl-C or SIGTERM; partial results",
            ExitCode.INTERRUPTED,
        )
    elif failure or failed_injectors:
        names = ", ".join(
            f"{i['id']} ({i['state']}, exit {i['exit_code']}, delivered {_pct(i.get('delivered_share'))} of its plan)"
            for i in failed_injectors
        )
        verdict, reason, code = (
            "degraded",
            failure or f"injector(s) did not complete: {names}",
            ExitCode.INFRASTRUCTURE,
        )
    elif failed_slos:
        verdict, reason, code = "failed", "SLO failed: " + "; ".join(failed_slos), ExitCode.SLO_FAILED
    else:
        verdict, reason, code = "passed", "every SLO met", ExitCode.PASSED
    summary.update(verdict=verdict, reason=reason, exit_code=int(code))
    return Verdict(verdict, reason, code, summary)


def _pct(value: float | None) -> str:
    return "?" if value is None or math.isnan(value) else f"{value:.0%}"


def _latency_rows(stats: MergedStats) -> list[tuple[str, list[Any]]]:
    """Rows for the terminal summary: all, each region, each request."""

    def row(lat: Any) -> list[Any]:
        a = lat.all
        pcts = lat.percentiles(REPORT_PERCENTILES)
        return [a.count, lat.ko.count, *(pcts[q] for q in REPORT_PERCENTILES), a.max]

    rows = [("all", row(stats.latency))]
    rows += [(f"region {name}", row(lat)) for name, lat in sorted(stats.by_region.items())]
    rows += [(f"request {name}", row(lat)) for name, lat in sorted(stats.by_request.items())]
    return rows
