from pathlib import Path

from loadorch.analysis import LogAccumulator, merge
from loadorch.livestream import parse_point
from loadorch.metrics.run_points import start_lines, summary_lines
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.plan.shapes import phases
from loadorch.profiles.loader import load_profile

START = 1_790_000_000_000


def test_start_lines_hold_the_plan_per_region_and_second_and_the_phases() -> None:
    profile = load_profile("viral-x10").profile
    plan = plan_run(profile, PlanOptions(now_ms=START, regions=("eu-west-2", "us-east-1")))
    points = [parse_point(line) for line in start_lines(plan, phases(profile))]
    planned = [p for p in points if p and p[0] == "planned_rate"]
    assert len(planned) == 2 * 71
    assert max(p[2]["users_per_s"] for p in planned) == 150  # each region's half of the 300/s peak
    assert all(p[3] >= plan.start_at_ms for p in points if p)
    events = [line for line in start_lines(plan, phases(profile)) if line.startswith("run_events")]
    assert len(events) == 1 + 5 and any("hold\\ at\\ peak" in e or '"hold at peak"' in e for e in events)


def test_summary_lines_scopes_and_errors(tmp_path: Path) -> None:
    profile = load_profile("smoke").profile
    plan = plan_run(profile, PlanOptions(now_ms=START - 3000))
    acc = LogAccumulator("local-1", "local", START)
    acc.feed(
        (
            f"REQUEST\t\tread_feed\t{START}\t{START + 10}\tOK\t \n"
            f"REQUEST\t\tread_post\t{START}\t{START + 30}\tKO\tstatus.find.in(200), but actually found 404\n"
        ).encode()
    )
    acc.finish()
    lines = summary_lines(plan, merge([acc]), "failed", START + 5000)
    scopes = sorted(line.split("scope=")[1].split(",")[0].split(" ")[0] for line in lines)
    assert scopes == ["error", "global", "region", "request", "request"]
    error = next(line for line in lines if "scope=error" in line)
    assert "name=status.find.in(200)\\,\\ but\\ actually\\ found\\ 404" in error and "ko=1.0" in error
