import pytest

from loadorch.curve import RateCurve
from loadorch.errors import BadInputError
from loadorch.plan.cost import (
    PriceTable,
    billed_seconds,
    check_budget,
    check_operator_cidr,
    check_ttl,
    estimate_cost,
)
from loadorch.plan.model import InjectorPlan, Plan, RegionPlan

PRICES = PriceTable(
    taken_on="2025-06-01",
    note="test prices",
    instance_usd_per_h={
        "eu-west-2": {"c6i.large": 0.101, "t3.medium": 0.0472},
        "us-east-1": {"c6i.large": 0.085, "t3.medium": 0.0416},
    },
    ebs_gp3_usd_per_gb_month={"eu-west-2": 0.0928, "us-east-1": 0.08},
)


def make_plan(injectors: dict[str, int], duration_s: float = 600) -> Plan:
    """A plan at 10 users/s for `duration_s`, with `injectors` per region."""
    curve = RateCurve.from_points([(0, 10), (duration_s, 10)])
    regions = []
    for name, count in injectors.items():
        shard = RateCurve.from_points([(0, 10 / count), (duration_s, 10 / count)])
        regions.append(
            RegionPlan(
                name=name,
                weight=1,
                share=1 / len(injectors),
                curve=curve,
                injectors=tuple(InjectorPlan(f"{name}-{i}", name, i, shard) for i in range(1, count + 1)),
            )
        )
    return Plan(
        run_id="r-test",
        profile_name="test",
        profile_digest="0" * 12,
        provider="aws",
        base_url="http://127.0.0.1:8080",
        start_at_ms=0,
        curve=curve,
        requests_per_user=1,
        regions=tuple(regions),
    )


@pytest.mark.parametrize(
    ("lifetime_s", "billed"), [(0, 60), (1, 60), (59.2, 60), (60, 60), (60.01, 61), (61, 61), (3599.5, 3600)]
)
def test_billing_is_per_second_with_a_60_s_minimum(lifetime_s: float, billed: int) -> None:
    assert billed_seconds(lifetime_s) == billed


def test_instance_hours_cover_boot_load_and_teardown() -> None:
    plan = make_plan({"eu-west-2": 3}, duration_s=600)
    estimate = estimate_cost(plan, "c6i.large", PRICES, boot_s=180, teardown_s=120, root_gb=0)
    assert estimate.billed_s_per_instance == 900
    (region,) = estimate.regions
    assert region.instances == 3
    assert region.instance_hours == pytest.approx(3 * 900 / 3600)
    assert region.compute_usd == pytest.approx(0.75 * 0.101)
    assert region.storage_usd == 0
    assert estimate.total_usd == pytest.approx(0.75 * 0.101)


def test_a_very_short_run_is_billed_the_60_s_minimum() -> None:
    plan = make_plan({"us-east-1": 2}, duration_s=20)
    estimate = estimate_cost(plan, "t3.medium", PRICES, boot_s=5, teardown_s=5, root_gb=0)
    assert estimate.billed_s_per_instance == 60
    assert estimate.instance_hours == pytest.approx(2 * 60 / 3600)
    assert estimate.total_usd == pytest.approx(2 * 60 / 3600 * 0.0416)


def test_multi_region_costs_add_up_with_each_regions_own_prices() -> None:
    plan = make_plan({"eu-west-2": 2, "us-east-1": 1}, duration_s=3300)
    estimate = estimate_cost(plan, "c6i.large", PRICES, boot_s=200, teardown_s=100, root_gb=8)
    assert estimate.billed_s_per_instance == 3600
    eu, us = estimate.regions
    assert (eu.region, eu.instances, eu.instance_hours) == ("eu-west-2", 2, pytest.approx(2.0))
    assert (us.region, us.instances, us.instance_hours) == ("us-east-1", 1, pytest.approx(1.0))
    assert eu.compute_usd == pytest.approx(2 * 0.101)
    assert us.compute_usd == pytest.approx(0.085)
    # 8 GB of gp3 for one hour is 8 GB x 1/730 of a month.
    assert eu.storage_usd == pytest.approx(8 * 0.0928 * 2 / 730)
    assert us.storage_usd == pytest.approx(8 * 0.08 / 730)
    assert estimate.instances == 3
    assert estimate.instance_hours == pytest.approx(3.0)
    assert estimate.total_usd == pytest.approx(eu.total_usd + us.total_usd)
    data = estimate.to_dict()
    assert data["total_usd"] == pytest.approx(estimate.total_usd, abs=1e-6)
    assert [r["region"] for r in data["regions"]] == ["eu-west-2", "us-east-1"]


def test_unknown_instance_type_names_the_type_the_region_and_the_refresh() -> None:
    plan = make_plan({"eu-west-2": 1})
    with pytest.raises(BadInputError) as caught:
        estimate_cost(plan, "m7g.huge", PRICES, boot_s=0, teardown_s=0, root_gb=8)
    text = caught.value.render()
    assert "'m7g.huge' in eu-west-2" in text
    assert "c6i.large, t3.medium" in text
    assert "spike prices --refresh --region eu-west-2 --type m7g.huge" in text


def test_unknown_region_names_the_known_regions_and_the_refresh() -> None:
    plan = make_plan({"sa-east-1": 1})
    with pytest.raises(BadInputError) as caught:
        estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=8)
    text = caught.value.render()
    assert "no prices for region 'sa-east-1'" in text
    assert "eu-west-2, us-east-1" in text
    assert "spike prices --refresh --region sa-east-1 --type c6i.large" in text


def test_negative_times_are_refused() -> None:
    with pytest.raises(BadInputError, match="boot_s must be a number >= 0"):
        estimate_cost(make_plan({"eu-west-2": 1}), "c6i.large", PRICES, boot_s=-1, teardown_s=0, root_gb=8)


def test_budget_allows_an_estimate_within_it() -> None:
    estimate = estimate_cost(
        make_plan({"eu-west-2": 2}), "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0
    )
    check_budget(estimate, None)
    check_budget(estimate, estimate.total_usd)
    check_budget(estimate, 1.0)


def test_budget_refusal_gives_the_cost_the_budget_and_the_fix() -> None:
    plan = make_plan({"eu-west-2": 10, "us-east-1": 10}, duration_s=3600)
    estimate = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0)
    assert estimate.total_usd == pytest.approx(10 * 0.101 + 10 * 0.085)
    with pytest.raises(BadInputError) as caught:
        check_budget(estimate, 1.5)
    text = caught.value.render()
    assert "cost about $1.86, over the budget of $1.50" in text
    assert "eu-west-2 $1.01 (10 x c6i.large)" in text
    assert "raise --max-cost to at least 1.86" in text


def test_negative_budget_is_refused() -> None:
    estimate = estimate_cost(
        make_plan({"eu-west-2": 1}), "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0
    )
    with pytest.raises(BadInputError, match="--max-cost must be"):
        check_budget(estimate, -1)


def test_ttl_fits_a_run_with_its_margin() -> None:
    plan = make_plan({"eu-west-2": 1}, duration_s=1200)
    # 3 + 20 + 2 = 25 min, plus the 5 min minimum margin: exactly 30 min.
    check_ttl(plan, 30, boot_s=180, teardown_s=120)


def test_ttl_refusal_says_the_run_length_the_ttl_and_the_fix() -> None:
    plan = make_plan({"eu-west-2": 1}, duration_s=1200)
    with pytest.raises(BadInputError) as caught:
        check_ttl(plan, 29, boot_s=180, teardown_s=120)
    text = caught.value.render()
    assert "the run lasts about 25 min (boot 3 min + load 20 min + teardown 2 min)" in text
    assert "5 min safety margin it needs 30 min" in text
    assert "TTL of 29 min" in text
    assert "raise --ttl to at least 30 minutes" in text


def test_ttl_margin_grows_with_long_runs() -> None:
    plan = make_plan({"eu-west-2": 1}, duration_s=6 * 3600)
    run_min = 6 * 60 + 10
    with pytest.raises(BadInputError, match="raise --ttl to at least 407 minutes"):
        check_ttl(plan, run_min + 5, boot_s=300, teardown_s=300)
    check_ttl(plan, 407, boot_s=300, teardown_s=300)


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_ttl_is_refused(ttl: float) -> None:
    with pytest.raises(BadInputError, match="--ttl must be a number of minutes > 0"):
        check_ttl(make_plan({"eu-west-2": 1}), ttl, boot_s=0, teardown_s=0)


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 203.0.113.7 ", "203.0.113.7/32"),
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:db8::/48", "2001:db8::/48"),
    ],
)
def test_operator_cidr_is_normalised(given: str, normalised: str) -> None:
    assert check_operator_cidr(given) == normalised


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/7", "128.0.0.0/1", "2000::/3", "2001:db8::/31"]
)
def test_too_wide_operator_cidrs_are_refused(cidr: str) -> None:
    with pytest.raises(BadInputError) as caught:
        check_operator_cidr(cidr)
    assert "spike refuses anything wider than" in caught.value.render()
    assert "your own public address" in caught.value.render()


@pytest.mark.parametrize("cidr", ["", "anywhere", "10.0.0", "10.0.0.0/33", "my-laptop.example"])
def test_non_cidrs_are_refused(cidr: str) -> None:
    with pytest.raises(BadInputError, match="is neither a CIDR nor an IP address"):
        check_operator_cidr(cidr)
