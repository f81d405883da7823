import math

import pytest

from loadorch.errors import BadInputError
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.plan.shapes import profile_curve
from loadorch.profiles.loader import load_profile
from loadorch.profiles.model import Profile

NOW = 1_790_000_000_000


def profile(name: str = "viral-x10") -> Profile:
    return load_profile(name).profile


@pytest.mark.parametrize("name", ["smoke", "viral-x3", "viral-x10", "weekly-resilience"])
def test_sum_of_injector_curves_equals_profile_curve(name: str) -> None:
    prof = profile(name)
    plan = plan_run(prof, PlanOptions(now_ms=NOW, regions=("eu-west-2", "us-east-1", "ap-south-1")))
    curve = profile_curve(prof)
    for t in [x / 4 for x in range(int(curve.duration_s) * 4 + 1)]:
        total = sum(i.curve.rate_at(t) for i in plan.injectors)
        assert total == pytest.approx(curve.rate_at(t), rel=1e-9, abs=1e-9)
    assert sum(i.planned_users for i in plan.injectors) == pytest.approx(curve.total_users, rel=1e-9)
    per_second = [sum(x) for x in zip(*(i.curve.users_per_second() for i in plan.injectors), strict=True)]
    assert per_second == pytest.approx(curve.users_per_second(), rel=1e-9)


def test_same_inputs_give_the_same_plan() -> None:
    options = PlanOptions(now_ms=NOW, regions=("eu-west-2", "us-east-1"))
    assert plan_run(profile(), options).to_dict() == plan_run(profile(), options).to_dict()


def test_different_time_gives_a_different_run_id_and_start() -> None:
    a = plan_run(profile(), PlanOptions(now_ms=NOW))
    b = plan_run(profile(), PlanOptions(now_ms=NOW + 1000))
    assert a.run_id != b.run_id
    assert b.start_at_ms - a.start_at_ms == 1000


def test_start_time_is_now_plus_lead() -> None:
    plan = plan_run(profile(), PlanOptions(now_ms=NOW, start_lead_s=7.5))
    assert plan.start_at_ms == NOW + 7500


def test_sizing_is_ceil_of_region_peak_over_capacity() -> None:
    prof = profile("viral-x10")  # peak 300 users/s, 200 per injector
    capacity = prof.injector.max_rate_per_s
    plan = plan_run(prof, PlanOptions(now_ms=NOW, regions=("eu-west-2",)))
    assert len(plan.injectors) == math.ceil(300 / capacity) == 2
    two = plan_run(prof, PlanOptions(now_ms=NOW, regions=("eu-west-2", "us-east-1")))
    assert [len(r.injectors) for r in two.regions] == [1, 1]
    assert [i.id for i in plan.injectors] == ["eu-west-2-1", "eu-west-2-2"]


def test_region_weights_from_profile_are_kept() -> None:
    prof = profile("weekly-resilience")  # eu-west-2 weight 2, us-east-1 weight 1
    plan = plan_run(prof, PlanOptions(now_ms=NOW))
    shares = {r.name: r.share for r in plan.regions}
    assert shares == pytest.approx({"eu-west-2": 2 / 3, "us-east-1": 1 / 3})
    # A region named on the command line but not in the profile gets weight 1.
    plan = plan_run(prof, PlanOptions(now_ms=NOW, regions=("eu-west-2", "sa-east-1")))
    assert {r.name: r.share for r in plan.regions} == pytest.approx({"eu-west-2": 2 / 3, "sa-east-1": 1 / 3})


def test_target_override_and_planned_requests() -> None:
    prof = profile("viral-x3")
    plan = plan_run(prof, PlanOptions(now_ms=NOW, target="http://127.0.0.1:9999/"))
    assert plan.base_url == "http://127.0.0.1:9999"
    assert plan.planned_requests == pytest.approx(plan.planned_users * 2)


def test_viral_curve_shape() -> None:
    prof = profile("viral-x10")
    curve = profile_curve(prof)
    assert curve.rate_at(0) == 30
    assert curve.rate_at(10) == 30
    assert curve.rate_at(30) == pytest.approx(300)
    assert curve.rate_at(45) == pytest.approx(300)
    assert curve.rate_at(70) == pytest.approx(30)
    assert curve.duration_s == 70
    # every breakpoint on a whole second: Gatling injects whole-second segments
    assert all(float(t).is_integer() for t, _ in curve.points)


def test_too_many_injectors_is_refused() -> None:
    with pytest.raises(BadInputError, match="injectors"):
        plan_run(profile(), PlanOptions(now_ms=NOW, max_injectors=1, regions=("a", "b")))


def test_bad_region_names_are_refused() -> None:
    with pytest.raises(BadInputError, match="twice"):
        plan_run(profile(), PlanOptions(now_ms=NOW, regions=("a", "a")))
    with pytest.raises(BadInputError, match="invalid region"):
        plan_run(profile(), PlanOptions(now_ms=NOW, regions=("eu west",)))


def test_plan_round_trips_through_json() -> None:
    from loadorch.plan.model import Plan

    plan = plan_run(profile(), PlanOptions(now_ms=NOW, regions=("eu-west-2", "us-east-1")))
    again = Plan.from_dict(plan.to_dict())
    assert again.to_dict() == plan.to_dict()


def test_phases_of_a_viral_storm_and_of_steps() -> None:
    from loadorch.plan.shapes import phases

    assert phases(profile("viral-x10")) == [
        ("warmup", 0),
        ("logistic growth to x10", 10),
        ("hold at peak", 30),
        ("decay", 50),
        ("cooldown", 65),
    ]
    assert phases(profile("smoke")) == [("step 1: ramp to 5 users/s", 0), ("step 2: hold 5 users/s", 5)]
