"""The guards `spike plan` applies before anything exists: the injector cap (--max-injectors), the
price table's reach (a 5-region plan with sa-east-1 and t3 prices; a missing price is refused
naming the fix), and what the cost output says about the figures (volume size, worst case, that
the prices are approximate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from loadorch.cli.main import app
from loadorch.cli.plan import print_cost
from loadorch.cloud.pricing import load_shipped_prices
from loadorch.errors import BadInputError
from loadorch.plan.cost import estimate_cost
from loadorch.plan.planner import DEFAULT_MAX_INJECTORS, MAX_INJECTORS_LIMIT, PlanOptions, plan_run
from loadorch.profiles.loader import load_profile
from loadorch.profiles.model import Profile

NOW = 1_790_000_000_000
FIVE_REGIONS = "eu-west-2,us-east-1,sa-east-1,ap-southeast-1,eu-central-1"


def viral(max_rate_per_s: float | None = None) -> Profile:
    """viral-x10: a peak of 300 users/s, 200 per injector unless `max_rate_per_s` says otherwise."""
    profile = load_profile("viral-x10").profile
    if max_rate_per_s is None:
        return profile
    return profile.model_copy(
        update={"injector": profile.injector.model_copy(update={"max_rate_per_s": max_rate_per_s})}
    )


def spike(*args: str, home: Path) -> Result:
    # A fresh state dir: no refreshed price table of this machine's user is read.
    return CliRunner().invoke(app, list(args), env={"SPIKE_HOME": str(home), "COLUMNS": "200"})


def test_the_default_cap_is_64() -> None:
    assert PlanOptions(now_ms=NOW).max_injectors == DEFAULT_MAX_INJECTORS == 64
    # 300 users/s at 4.5 per injector: 67 injectors in one region.
    with pytest.raises(BadInputError) as caught:
        plan_run(viral(4.5), PlanOptions(now_ms=NOW, regions=("eu-west-2",)))
    text = caught.value.render()
    assert (
        "--max-injectors: the plan needs 67 injectors (eu-west-2 67), more than --max-injectors 64 allows"
        in text
    )
    assert (
        "the largest plan allowed has 64 injectors, about 288 users/s at injector.max_rate_per_s 4.5" in text
    )
    assert f"raise --max-injectors to 67 or more (at most {MAX_INJECTORS_LIMIT})" in text
    assert "raise injector.max_rate_per_s in the profile" in text
    plan = plan_run(viral(4.5), PlanOptions(now_ms=NOW, regions=("eu-west-2",), max_injectors=67))
    assert len(plan.injectors) == 67


def test_a_plan_beyond_the_upper_bound_is_not_told_to_raise_the_cap() -> None:
    with pytest.raises(BadInputError) as caught:
        plan_run(viral(0.5), PlanOptions(now_ms=NOW, regions=("eu-west-2", "us-east-1"), max_injectors=500))
    text = caught.value.render()
    assert (
        "the plan needs 600 injectors (eu-west-2 300, us-east-1 300), more than --max-injectors 500" in text
    )
    assert "raise --max-injectors" not in text
    assert "--max-injectors goes up to 500 only" in text


@pytest.mark.parametrize("cap", [0, -1, MAX_INJECTORS_LIMIT + 1])
def test_a_cap_outside_its_range_is_refused(cap: int) -> None:
    with pytest.raises(
        BadInputError, match=rf"--max-injectors must be a whole number from 1 to 500, not {cap}"
    ):
        plan_run(viral(), PlanOptions(now_ms=NOW, max_injectors=cap))


def test_spike_plan_has_the_cap_option(tmp_path: Path) -> None:
    result = spike(
        "plan",
        "--profile",
        "viral-x10",
        "--regions",
        "eu-west-2,us-east-1",
        "--max-injectors",
        "1",
        home=tmp_path,
    )
    assert result.exit_code == 2, result.output
    assert "more than --max-injectors 1 allows" in result.output
    assert "raise --max-injectors to 2 or more" in result.output
    result = spike(
        "plan",
        "--profile",
        "viral-x10",
        "--regions",
        "eu-west-2,us-east-1",
        "--max-injectors",
        "2",
        home=tmp_path,
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("cap", ["0", "501"])
def test_spike_plan_refuses_a_cap_outside_its_range(tmp_path: Path, cap: str) -> None:
    result = spike("plan", "--profile", "viral-x10", "--max-injectors", cap, home=tmp_path)
    assert result.exit_code == 2, result.output
    assert f"--max-injectors: {cap} is outside 1..500" in result.output
    assert "give a whole number from 1 to 500 (default 64)" in result.output


def test_a_five_region_plan_with_sa_east_1_and_t3_is_priced(tmp_path: Path) -> None:
    result = spike(
        "plan", "--profile", "viral-x10", "--provider", "aws", "--regions", FIVE_REGIONS,
        "--instance-type", "t3.medium", "--json", home=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cost = json.loads(result.output)["cost"]
    assert [r["region"] for r in cost["regions"]] == FIVE_REGIONS.split(",")
    by_region = {r["region"]: r for r in cost["regions"]}
    table = load_shipped_prices()
    assert (
        by_region["sa-east-1"]["usd_per_instance_h"]
        == table.instance_price("sa-east-1", "t3.medium")
        == 0.0672
    )
    assert all(r["instances"] == 1 and r["total_usd"] > 0 for r in cost["regions"])
    assert cost["prices_approximate"] is True
    assert cost["total_usd"] == pytest.approx(sum(r["total_usd"] for r in cost["regions"]), abs=1e-5)


def test_the_cost_output_says_the_prices_are_approximate_and_the_volume_size(tmp_path: Path) -> None:
    result = spike(
        "plan", "--profile", "viral-x10", "--provider", "aws", "--regions", FIVE_REGIONS,
        "--instance-type", "t3.medium", home=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"with a \d+ GB gp3 root volume", result.output)
    assert "approximate list prices as of 2025-06-01 (built in)" in result.output
    assert (
        "`spike prices --refresh` fetches current on-demand prices from the AWS Pricing API" in result.output
    )


def test_a_type_without_a_price_in_a_region_is_refused_naming_the_fix(tmp_path: Path) -> None:
    # EC2 does not offer c7a in sa-east-1, so the table has no price for it there.
    result = spike(
        "plan", "--profile", "viral-x10", "--provider", "aws", "--regions", "eu-west-2,sa-east-1",
        "--instance-type", "c7a.large", home=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "no price for instance type 'c7a.large' in sa-east-1" in result.output
    assert "spike prices --refresh --region sa-east-1 --type c7a.large" in result.output


def test_print_cost_shows_the_estimate_and_the_worst_case(capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_run(viral(), PlanOptions(now_ms=NOW, provider="aws", regions=("eu-west-2", "sa-east-1")))
    estimate = estimate_cost(
        plan,
        "t3.medium",
        load_shipped_prices(),
        boot_s=180,
        teardown_s=120,
        root_gb=20,
        use_spot=True,
        ttl_minutes=90,
    )
    assert estimate.worst_case_usd is not None
    print_cost(estimate)
    out = capsys.readouterr().out
    assert "worst case USD" in out
    # Two spot t3.medium for 370 s cost a fraction of a cent: said so, not shown as free.
    assert estimate.total_usd < 0.005
    assert f"estimated under $0.01, worst case ${estimate.worst_case_usd:.2f} if spike dies" in out
    assert "<0.01" in out and " 0.00 " not in out
    assert "(spot)" in out
    assert "with a 20 GB gp3 root volume" in out
    assert "worst case if spike dies: every injector lives to its TTL of 90 min" in out
    assert "spot estimated at a typical spot price" in out
