"""The run-level points the orchestrator writes (pure): the plan, the run's events, the final numbers.

Injector-level points (Gatling's per-second stats, users, health) come from the agents.
"""

from __future__ import annotations

import math
from typing import Any

from loadorch.analysis.stats import REPORT_PERCENTILES, Latency, MergedStats
from loadorch.metrics import schema
from loadorch.plan.model import Plan

# errors by message become tag values: keep their number and length bounded (series cardinality)
MAX_ERROR_MESSAGES = 50
MAX_MESSAGE_CHARS = 200


def planned_rate_lines(plan: Plan) -> list[str]:
    """One point per region per second of the plan, at the shared start + t, so dashboards overlay plan and achievement."""
    lines = []
    for region in plan.regions:
        for second in range(math.ceil(plan.duration_s) + 1):
            lines.append(
                schema.line(
                    schema.PLANNED_RATE,
                    {"run_id": plan.run_id, "region": region.name},
                    {"users_per_s": region.curve.rate_at(second)},
                    plan.start_at_ms + second * 1000,
                )
            )
    return lines


def start_lines(plan: Plan, phases: list[tuple[str, int]]) -> list[str]:
    """Written when the run starts: the planned curve, the start event and one event per storm phase."""
    lines = [
        *planned_rate_lines(plan),
        event_line(plan.run_id, "start", f"{plan.profile_name} on {plan.base_url}", plan.start_at_ms),
    ]
    for name, start_s in phases:
        # +1 ms keeps a phase beginning at 0 s from overwriting the start event (same series, same time)
        lines.append(event_line(plan.run_id, "phase", name, plan.start_at_ms + start_s * 1000 + 1))
    return lines


def event_line(run_id: str, event: str, text: str, ts_ms: int, verdict: str = "") -> str:
    fields: dict[str, float | int | str | bool] = {"text": text}
    if verdict:
        fields["verdict"] = verdict
    return schema.line(schema.RUN_EVENTS, {"run_id": run_id, "event": event}, fields, ts_ms)


def summary_lines(plan: Plan, stats: MergedStats, verdict: str, ts_ms: int) -> list[str]:
    """The exact final statistics from the merged logs: global, per region, per request, per error message."""
    scopes: list[tuple[str, str, Latency]] = [("global", "all", stats.latency)]
    scopes += [("region", name, lat) for name, lat in sorted(stats.by_region.items())]
    scopes += [("request", name, lat) for name, lat in sorted(stats.by_request.items())]
    base = {"run_id": plan.run_id, "profile": plan.profile_name, "verdict": verdict}
    lines = []
    for scope, name, lat in scopes:
        everything = lat.all
        fields: dict[str, Any] = {
            "requests": everything.count,
            "ok": lat.ok.count,
            "ko": lat.ko.count,
            "error_rate": lat.ko.count / everything.count if everything.count else 0.0,
            "peak_rate_per_s": plan.peak_rate,
        }
        for q, value in lat.percentiles(REPORT_PERCENTILES).items():
            if value is not None:
                fields[f"p{int(q)}"] = value
        if everything.max is not None:
            fields["max"] = everything.max
        lines.append(schema.line(schema.RUN_SUMMARY, {**base, "scope": scope, "name": name}, fields, ts_ms))
    for error in stats.errors[:MAX_ERROR_MESSAGES]:
        tags = {**base, "scope": "error", "name": error.message[:MAX_MESSAGE_CHARS]}
        lines.append(schema.line(schema.RUN_SUMMARY, tags, {"ko": error.count}, ts_ms))
    return lines
