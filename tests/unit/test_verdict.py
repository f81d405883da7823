from pathlib import Path

import pytest

from loadorch.analysis import LogAccumulator, merge
from loadorch.errors import ExitCode
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import parse_profile
from loadorch.run.result import InjectorOutcome, Verdict
from loadorch.verdict import RunContext, evaluate_slos, fidelity_mape_pct, judge

START = 1_790_000_000_000

PROFILE = """\
name: v
target: {base_url: "http://127.0.0.1:1"}
baseline_rate_per_s: 2
shape: {kind: steps, steps: [{duration_s: 3, rate_per_s: 2}]}
scenario: {requests: [{name: a, path: /}, {name: b, path: /b}]}
regions: [{name: r1}]
slos:
  error_rate_max: 0.25
  latency:
    - {percentile: 95, max_ms: 100}
    - {percentile: 50, max_ms: 10, request: b}
"""


def stats_from(lines: list[str]):
    acc = LogAccumulator("r1-1", "r1", START)
    acc.feed(("\n".join(lines) + "\n").encode())
    acc.finish()
    return merge([acc])


def log_lines(latencies: list[tuple[str, int, str]]) -> list[str]:
    lines = [f"RUN\tspike.SpikeSimulation\tspikesimulation\t{START}\t \t3.11.5"]
    for i, (name, rt, status) in enumerate(latencies):
        t = START + 500 * i
        lines.append(f"USER\tusers\tSTART\t{t}")
        msg = "boom" if status == "KO" else " "
        lines.append(f"REQUEST\t\t{name}\t{t}\t{t + rt}\t{status}\t{msg}")
    return lines


CONTEXT = RunContext("runs/x")


def outcome(*, exit_code: int, state: str, ready_margin_ms: int) -> InjectorOutcome:
    return InjectorOutcome(
        "r1-1", "r1", state=state, exit_code=exit_code, planned_users=6, ready_margin_ms=ready_margin_ms
    )


@pytest.fixture
def plan_and_profile(tmp_path: Path):
    profile = parse_profile(PROFILE, tmp_path / "v.yaml").profile
    return plan_run(profile, PlanOptions(now_ms=START - 3500)), profile


def test_slos_evaluated_exactly(plan_and_profile) -> None:
    _, profile = plan_and_profile
    stats = stats_from(log_lines([("a", 20, "OK"), ("a", 30, "OK"), ("b", 5, "OK"), ("b", 200, "KO")]))
    results = {r.name: r for r in evaluate_slos(profile.slos, stats)}
    p95 = results["p95 latency of all requests <= 100 ms"]
    assert (p95.actual, p95.passed) == (200, False)
    b50 = results["p50 latency of b <= 10 ms"]
    assert (b50.actual, b50.passed) == (5, True)
    err = results["error rate <= 25.00%"]
    assert (err.actual, err.passed) == (0.25, True)


def test_judge_fails_on_slo_and_passes_otherwise(plan_and_profile) -> None:
    plan, profile = plan_and_profile
    injectors = [outcome(exit_code=0, state="completed", ready_margin_ms=900)]
    bad = judge(plan, profile.slos, stats_from(log_lines([("a", 500, "OK")] * 6)), injectors, CONTEXT)
    assert bad.verdict is Verdict.FAILED and bad.exit_code == ExitCode.SLO_FAILED
    assert "p95 latency of all requests" in bad.reason
    # an SLO about a request that never ran cannot be met
    assert "p50 latency of b" in bad.reason
    good = judge(
        plan, profile.slos, stats_from(log_lines([("a", 5, "OK"), ("b", 5, "OK")] * 3)), injectors, CONTEXT
    )
    assert good.verdict is Verdict.PASSED and good.exit_code == ExitCode.PASSED
    assert good.to_dict()["requests"] == {"total": 6, "ok": 6, "ko": 0}
    assert good.injectors[0].delivered_share == 1.0
    assert good.fidelity is not None and good.fidelity.mape_pct == 0.0
    # judging does not change what it was given
    assert injectors[0].delivered_share is None


def test_judge_degraded_names_the_injector_and_share(plan_and_profile) -> None:
    plan, profile = plan_and_profile
    injectors = [outcome(exit_code=137, state="failed", ready_margin_ms=5)]
    verdict = judge(plan, profile.slos, stats_from(log_lines([("a", 5, "OK")] * 3)), injectors, CONTEXT)
    assert verdict.verdict is Verdict.DEGRADED and verdict.exit_code == ExitCode.INFRASTRUCTURE
    assert "r1-1 (failed, exit 137, delivered 50% of its plan)" in verdict.reason


def test_judge_without_data_is_an_infrastructure_failure(plan_and_profile) -> None:
    plan, profile = plan_and_profile
    verdict = judge(plan, profile.slos, None, [], CONTEXT)
    assert verdict.verdict is Verdict.INVALID and verdict.exit_code == ExitCode.INFRASTRUCTURE
    assert "nothing was measured" in verdict.reason
    interrupted = judge(plan, profile.slos, None, [], RunContext("runs/x", interrupted=True))
    assert interrupted.exit_code == ExitCode.INTERRUPTED


def test_late_injector_is_reported(plan_and_profile) -> None:
    plan, profile = plan_and_profile
    injectors = [outcome(exit_code=0, state="completed", ready_margin_ms=-40)]
    verdict = judge(plan, profile.slos, stats_from(log_lines([("a", 5, "OK")] * 6)), injectors, CONTEXT)
    assert verdict.late_injectors == ("r1-1",)


def test_injector_stopped_after_delivering_its_whole_plan_is_not_blamed(plan_and_profile) -> None:
    """A hung target keeps an injector waiting for answers; spike stops it: the target failed, not it."""
    plan, profile = plan_and_profile
    stopped = [outcome(exit_code=143, state="stopped", ready_margin_ms=5)]
    full = judge(plan, profile.slos, stats_from(log_lines([("a", 5, "KO")] * 6)), stopped, CONTEXT)
    assert full.injectors[0].state == "completed"
    assert full.verdict is Verdict.FAILED and "error rate" in full.reason
    half = judge(plan, profile.slos, stats_from(log_lines([("a", 5, "OK")] * 3)), stopped, CONTEXT)
    assert half.injectors[0].state == "stopped" and half.verdict is Verdict.DEGRADED


def test_fidelity_mape_ignores_seconds_below_one_user() -> None:
    assert fidelity_mape_pct([0.5, 10, 20], [7, 11, 18]) == pytest.approx(10.0)
    assert fidelity_mape_pct([10, 10], [10]) == pytest.approx(50.0)
    assert fidelity_mape_pct([0.2], [1]) is None


def test_users_left_waiting_when_stopped_fail_the_run(plan_and_profile) -> None:
    """A hung target: spike stops injectors whose users never got an answer; that is never a pass."""
    plan, profile = plan_and_profile
    lines = log_lines([("a", 5, "OK")] * 6)
    lines += [f"USER\tusers\tSTART\t{START + 3000}"]  # started, never ended, no request recorded
    for i in range(6):
        lines.append(f"USER\tusers\tEND\t{START + 500 * i + 10}")
    stopped = [outcome(exit_code=143, state="stopped", ready_margin_ms=5)]
    result = judge(plan, profile.slos, stats_from(lines), stopped, CONTEXT)
    assert result.verdict is Verdict.FAILED
    assert "every request answered (1 user(s) still waiting when stopped)" in result.reason
