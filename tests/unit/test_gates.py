"""Validity gates (pure): a run measured other than as planned is invalid, never passed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from loadorch.errors import ExitCode
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import parse_profile
from loadorch.run import gates
from loadorch.run.adjust import with_gates
from loadorch.run.result import GateFinding, RunResult, Verdict

PROFILE = """\
name: g
target: {base_url: "http://127.0.0.1:1"}
baseline_rate_per_s: 120
shape: {kind: steps, steps: [{duration_s: 20, rate_per_s: 120}]}
scenario: {requests: [{name: a, path: /}]}
regions: [{name: r1}, {name: r2, weight: 3}]
"""


@pytest.fixture
def plan(tmp_path: Path):
    return plan_run(parse_profile(PROFILE, tmp_path / "g.yaml").profile, PlanOptions(now_ms=0))


def on_plan(plan, injector_id: str) -> dict[int, int]:
    injector = next(i for i in plan.injectors if i.id == injector_id)
    return {s: round(p) for s, p in enumerate(injector.curve.users_per_second())}


def test_an_injector_on_plan_passes_every_gate(plan) -> None:
    arrivals = [gates.InjectorArrivals(i.id, on_plan(plan, i.id), True) for i in plan.injectors]
    assert gates.injector_findings(plan, arrivals, plan.duration_s) == []


def test_a_stall_then_a_catch_up_burst_are_named_with_their_seconds(plan) -> None:
    per_second = on_plan(plan, "r2-1")  # 90 users/s
    for s in range(5, 15):
        per_second[s] = 0
    per_second[15] = 900  # catching up: 10x in one second
    findings = gates.injector_findings(
        plan, [gates.InjectorArrivals("r2-1", per_second, True)], plan.duration_s
    )
    stall, burst = findings
    assert (stall.gate, stall.where, stall.seconds) == ("stall", "r2-1", tuple(range(5, 15)))
    assert "started 0 of 900 planned users" in stall.detail
    assert (burst.gate, burst.seconds) == ("burst", (15,))
    assert "10.0x the plan in second 15" in burst.detail


def test_one_short_second_is_jitter_and_seconds_after_an_interrupt_are_not_judged(plan) -> None:
    per_second = on_plan(plan, "r2-1")
    per_second[7] = 0
    assert gates.injector_findings(plan, [gates.InjectorArrivals("r2-1", per_second, True)], 20) == []
    silent_after = {s: v for s, v in on_plan(plan, "r2-1").items() if s < 9}
    assert gates.injector_findings(plan, [gates.InjectorArrivals("r2-1", silent_after, True)], 9.5) == []


def test_an_injector_that_failed_is_left_to_the_degraded_verdict(plan) -> None:
    assert gates.injector_findings(plan, [gates.InjectorArrivals("r2-1", {}, False)], 20) == []


def test_region_fidelity_only_where_the_plan_is_busy(plan) -> None:
    found = gates.region_findings(plan, {"r1": 18.0, "r2": 3.0})
    assert [(f.gate, f.where) for f in found] == []  # r1 plans 30 users/s: too quiet for MAPE to mean much
    found = gates.region_findings(plan, {"r1": 3.0, "r2": 18.0})
    assert [(f.gate, f.where) for f in found] == [("fidelity", "region r2")]


def test_heartbeat_gap_of_three_busy_seconds(plan) -> None:
    beats = {"r2-1": set(range(20)) - {8, 9, 10}, "r1-1": set(range(20)) - {8, 9}}
    found = gates.heartbeat_findings(plan, beats, {"r1-1", "r2-1"}, 20)
    assert [(f.where, f.seconds) for f in found] == [("r2-1", (8, 9, 10))]


def test_saturation_is_a_warning_that_keeps_the_verdict(plan, tmp_path: Path) -> None:
    cpu = {"r1-1": {s: 99.0 for s in range(3, 10)}, "r2-1": {s: 99.0 for s in range(3, 6)}}
    (warning,) = gates.saturation_findings(cpu, 20)
    assert (warning.gate, warning.where, warning.invalidates) == ("saturation", "r1-1", False)
    result = RunResult(
        "g", "g", "local", "http://127.0.0.1:1", 0, 20, 800, 800, Verdict.PASSED, ("every SLO met",), "runs/g"
    )
    kept = with_gates(result, [warning])
    assert kept.verdict is Verdict.PASSED and kept.gates == (warning,)
    stall = GateFinding("stall", "r2-1", "stalled in seconds 5-14", (5,))
    gated = with_gates(kept, [warning, stall])
    assert gated.verdict is Verdict.INVALID and gated.exit_code == ExitCode.INFRASTRUCTURE
    assert gated.reason.startswith("not a valid measurement: r2-1: stalled in seconds 5-14; every SLO met")
    assert with_gates(replace(result, verdict=Verdict.INTERRUPTED), [stall]).verdict is Verdict.INTERRUPTED
