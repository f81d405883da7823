"""Validity gates (pure): was the load measured as planned? If not, no verdict may say "passed".

An injector that stalls (a paused JVM, a starved host) injects nothing for a
while and then catches up in a burst; its region's totals can still look close
to the plan while the target saw a different storm. The gates look at every
injector's own per-second arrivals against its own planned curve, and at each
region's fidelity, and name the injector, the gate and the seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loadorch.plan.model import Plan
from loadorch.run.result import GateFinding

STALL_MIN_SECONDS = 2  # consecutive short seconds that make a stall (one short second is jitter)
SHORT_SHARE = 0.5  # a second is short below half its planned arrivals (less a user of slack)
BURST_FACTOR = 2.0  # a catch-up burst: more than twice the planned arrivals (plus two users)
# a region whose arrivals missed the plan by more than this on average ...
REGION_MAPE_MAX_PCT = 15.0
# ... judged only where the plan is busy enough for per-second MAPE to mean something: below this a
# user landing in the next second (flush and start phase) is already several percent of a second
REGION_MAPE_MIN_RATE = 50.0
HEARTBEAT_GAP_S = 3  # consecutive busy seconds in which Gatling reported nothing at all
SATURATED_CPU_PCT = 95.0  # an injector host this busy queues its own requests: latency includes it
SATURATED_MIN_S = 5


@dataclass(frozen=True)
class InjectorArrivals:
    """An injector's users started per second of the run (on the shared timeline)."""

    injector_id: str
    per_second: Mapping[int, int]
    completed: bool  # only injectors that ran to the end are judged here (others are "degraded" already)


def _runs(seconds: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in seconds:
        if out and out[-1][-1] == s - 1:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _span(seconds: Sequence[int]) -> str:
    return f"second {seconds[0]}" if len(seconds) == 1 else f"seconds {seconds[0]}-{seconds[-1]}"


def injector_findings(
    plan: Plan, arrivals: Sequence[InjectorArrivals], observed_s: float
) -> list[GateFinding]:
    """Stalls and catch-up bursts of each injector, over the seconds the run really covered.

    The first and the last planned second are left out (a start or an end falls inside them),
    and so is everything after `observed_s` (an interrupted run stopped there).
    """
    by_id = {i.id: i for i in plan.injectors}
    findings: list[GateFinding] = []
    for item in arrivals:
        if not item.completed or item.injector_id not in by_id:
            continue
        planned = by_id[item.injector_id].curve.users_per_second()
        last = min(len(planned) - 1, int(observed_s)) - 1
        short: list[int] = []
        bursts: list[int] = []
        for second in range(1, last):
            p, a = planned[second], item.per_second.get(second, 0)
            if p >= 1 and (a == 0 or (p >= 2 and a < SHORT_SHARE * p - 1)):
                short.append(second)
            if a > BURST_FACTOR * p + 2:
                bursts.append(second)
        stalls = [run for run in _runs(short) if len(run) >= STALL_MIN_SECONDS]
        for run in stalls:
            got = sum(item.per_second.get(s, 0) for s in run)
            want = sum(planned[s] for s in run)
            findings.append(
                GateFinding(
                    "stall",
                    item.injector_id,
                    f"stalled in {_span(run)}: started {got} of {want:.0f} planned users",
                    tuple(run),
                )
            )
        if bursts:
            worst = max(bursts, key=lambda s: item.per_second.get(s, 0) / max(planned[s], 1.0))
            factor = item.per_second.get(worst, 0) / max(planned[worst], 1.0)
            findings.append(
                GateFinding(
                    "burst",
                    item.injector_id,
                    f"catch-up burst in {_span(bursts) if len(bursts) == 1 else f'{len(bursts)} seconds'}"
                    f" (up to {factor:.1f}x the plan in second {worst})",
                    tuple(bursts),
                )
            )
    return findings


def region_findings(plan: Plan, by_region_mape_pct: Mapping[str, float | None]) -> list[GateFinding]:
    """Regions whose arrivals missed a busy plan by more than REGION_MAPE_MAX_PCT on average."""
    findings = []
    for region in plan.regions:
        mape = by_region_mape_pct.get(region.name)
        mean_rate = region.curve.total_users / region.curve.duration_s if region.curve.duration_s else 0.0
        if mape is not None and mape > REGION_MAPE_MAX_PCT and mean_rate >= REGION_MAPE_MIN_RATE:
            findings.append(
                GateFinding(
                    "fidelity",
                    f"region {region.name}",
                    f"arrivals missed the plan by {mape:.1f} % on average (at most {REGION_MAPE_MAX_PCT:.0f} %)",
                )
            )
    return findings


def _injector_rates(plan: Plan) -> dict[str, list[float]]:
    return {i.id: i.curve.users_per_second() for i in plan.injectors}


def heartbeat_findings(
    plan: Plan, beats: Mapping[str, set[int]], completed: set[str], observed_s: float
) -> list[GateFinding]:
    """Injectors whose Gatling went silent (no metrics at all) for HEARTBEAT_GAP_S busy seconds or more."""
    findings = []
    for injector_id, planned in _injector_rates(plan).items():
        if injector_id not in completed or not beats.get(injector_id):
            continue  # an injector without any metrics is judged by its log alone (no agent stream)
        seen = beats[injector_id]
        last = min(len(planned) - 1, int(observed_s)) - 1
        silent = [s for s in range(1, last) if planned[s] >= 2 and s not in seen]
        for run in _runs(silent):
            if len(run) >= HEARTBEAT_GAP_S:
                findings.append(
                    GateFinding(
                        "heartbeat", injector_id, f"Gatling reported nothing in {_span(run)}", tuple(run)
                    )
                )
    return findings


def saturation_findings(cpu_pct: Mapping[str, Mapping[int, float]], observed_s: float) -> list[GateFinding]:
    """Injector hosts at SATURATED_CPU_PCT or more for SATURATED_MIN_S seconds: a warning, not a verdict.

    A busy host still injects on time (the stall and burst gates say when it does not), but its own
    queueing adds to the latency it measures, so the figures are reported with that warning.
    """
    findings = []
    for injector_id, per_second in sorted(cpu_pct.items()):
        busy = sorted(s for s, pct in per_second.items() if pct >= SATURATED_CPU_PCT and s <= observed_s)
        runs = [run for run in _runs(busy) if len(run) >= SATURATED_MIN_S]
        if runs:
            worst = max(per_second.values())
            seconds = tuple(s for run in runs for s in run)
            findings.append(
                GateFinding(
                    "saturation",
                    injector_id,
                    f"host CPU at {SATURATED_CPU_PCT:.0f} % or more for {len(seconds)} s (up to {worst:.0f} %):"
                    " its latencies include its own queueing",
                    seconds,
                    invalidates=False,
                )
            )
    return findings
