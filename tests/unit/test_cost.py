import math

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
        "eu-west-2": {"c6i.large": 0.101, "t3.medium": 0.0472, "r7i.large": 0.15},
        "us-east-1": {"c6i.large": 0.085, "t3.medium": 0.0416},
    },
    ebs_gp3_usd_per_gb_month={"eu-west-2": 0.0928, "us-east-1": 0.08},
    approximate=True,
    spot_fraction={"c6i": 0.4, "t3": 0.35},
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
    assert "c6i.large, r7i.large, t3.medium" in text
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
        ("10.1.2.3/16", "10.1.0.0/16"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:db8::/48", "2001:db8::/48"),
    ],
)
def test_operator_cidr_is_normalised(given: str, normalised: str) -> None:
    assert check_operator_cidr(given) == normalised
    assert check_operator_cidr(given, force_wide=True) == normalised


@pytest.mark.parametrize(
    ("cidr", "normalised", "addresses", "prefix"),
    [
        ("10.1.2.3/15", "10.0.0.0/15", "131,072", "/16"),
        ("10.1.2.3/8", "10.0.0.0/8", "16,777,216", "/16"),
        ("2001:db8::/47", "2001:db8::/47", "2,417,851,639,229,258,349,412,352", "/48"),
        ("2001:db8::/32", "2001:db8::/32", f"{2**96:,}", "/48"),
    ],
)
def test_wide_operator_cidrs_are_refused_unless_forced(
    cidr: str, normalised: str, addresses: str, prefix: str
) -> None:
    with pytest.raises(BadInputError) as caught:
        check_operator_cidr(cidr)
    text = caught.value.render()
    assert f"operator CIDR {normalised} would open the injectors' SSH to {addresses} addresses" in text
    assert f"refuses anything wider than {prefix}" in text
    assert "your own public address" in text
    assert "add --allow-wide-operator-cidr" in text
    assert check_operator_cidr(cidr, force_wide=True) == normalised


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/7", "128.0.0.0/1", "2000::/3", "2001:db8::/31"]
)
def test_too_wide_operator_cidrs_are_refused_even_when_forced(cidr: str) -> None:
    for force in (False, True):
        with pytest.raises(BadInputError) as caught:
            check_operator_cidr(cidr, force_wide=force)
        text = caught.value.render()
        assert "spike refuses anything wider than" in text
        assert "even with --allow-wide-operator-cidr" in text
        assert "your own public address" in text


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_an_open_cidr_says_the_whole_internet(cidr: str) -> None:
    with pytest.raises(BadInputError, match="would open the injectors' SSH to the whole internet"):
        check_operator_cidr(cidr, force_wide=True)


@pytest.mark.parametrize("cidr", ["", "anywhere", "10.0.0", "10.0.0.0/33", "my-laptop.example"])
def test_non_cidrs_are_refused(cidr: str) -> None:
    with pytest.raises(BadInputError, match="is neither a CIDR nor an IP address"):
        check_operator_cidr(cidr)


def test_unknown_size_lists_the_sizes_of_its_family() -> None:
    with pytest.raises(BadInputError) as caught:
        estimate_cost(make_plan({"eu-west-2": 1}), "c6i.medium", PRICES, boot_s=0, teardown_s=0, root_gb=8)
    text = caught.value.render()
    assert "no price for instance type 'c6i.medium' in eu-west-2; known types there: c6i.large" in text
    assert "spike prices --refresh --region eu-west-2 --type c6i.medium" in text


def test_the_root_volume_size_given_is_the_one_priced() -> None:
    plan = make_plan({"eu-west-2": 2}, duration_s=3600)
    small = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=16)
    created = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=20)
    assert created.root_gb == 20 and created.to_dict()["root_gb"] == 20
    (region,) = created.regions
    assert region.storage_usd == pytest.approx(2 * 20 * 0.0928 / 730)
    assert created.total_usd - small.total_usd == pytest.approx(2 * 4 * 0.0928 / 730)
    assert "with a 20 GB gp3 root volume" in created.basis()[0]


def test_spot_is_estimated_at_the_typical_spot_price() -> None:
    plan = make_plan({"eu-west-2": 2, "us-east-1": 1}, duration_s=3600)
    estimate = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0, use_spot=True)
    eu, us = estimate.regions
    assert (eu.market, eu.usd_per_instance_h, eu.on_demand_usd_per_h) == (
        "spot",
        pytest.approx(0.0404),
        0.101,
    )
    assert eu.compute_usd == pytest.approx(2 * 0.101 * 0.4)
    assert us.compute_usd == pytest.approx(0.085 * 0.4)
    assert estimate.use_spot and estimate.spot_unknown_regions == ()
    basis = " ".join(estimate.basis())
    assert "spot estimated at a typical spot price" in basis
    assert "spot price unknown" not in basis
    on_demand = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0)
    assert estimate.total_usd == pytest.approx(on_demand.total_usd * 0.4)
    assert {r.market for r in on_demand.regions} == {"on-demand"}


def test_spot_without_a_known_price_is_estimated_at_the_on_demand_ceiling_and_says_so() -> None:
    plan = make_plan({"eu-west-2": 1}, duration_s=3600)
    estimate = estimate_cost(plan, "r7i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0, use_spot=True)
    (region,) = estimate.regions
    assert (region.market, region.usd_per_instance_h) == ("spot at on-demand ceiling", 0.15)
    assert estimate.total_usd == pytest.approx(0.15)
    assert estimate.spot_unknown_regions == ("eu-west-2",)
    assert any(
        line.startswith("spot price unknown for r7i.large in eu-west-2: on-demand used as the ceiling")
        for line in estimate.basis()
    )
    assert estimate.to_dict()["regions"][0]["market"] == "spot at on-demand ceiling"


def test_worst_case_is_every_injector_living_to_its_ttl_at_on_demand() -> None:
    plan = make_plan({"eu-west-2": 2, "us-east-1": 1}, duration_s=600)
    estimate = estimate_cost(
        plan, "c6i.large", PRICES, boot_s=180, teardown_s=120, root_gb=20, use_spot=True, ttl_minutes=60
    )
    # 60 min TTL + the 5 min from launch to the TTL clock starting.
    assert estimate.worst_case_billed_s == 3900
    eu, us = estimate.regions
    hours = 3900 / 3600
    assert eu.worst_case_usd == pytest.approx(2 * hours * (0.101 + 20 * 0.0928 / 730))
    assert us.worst_case_usd == pytest.approx(hours * (0.085 + 20 * 0.08 / 730))
    assert estimate.worst_case_usd == pytest.approx(eu.worst_case_usd + us.worst_case_usd)
    # The estimate is at spot for 900 s, far below.
    assert estimate.total_usd < estimate.worst_case_usd / 4
    data = estimate.to_dict()
    assert data["worst_case_usd"] == pytest.approx(estimate.worst_case_usd, abs=1e-6)
    assert (data["ttl_minutes"], data["worst_case_billed_s"], data["use_spot"]) == (60, 3900, True)
    assert data["regions"][0]["worst_case_usd"] == pytest.approx(eu.worst_case_usd, abs=1e-6)
    assert estimate.worst_case_at(60) == pytest.approx(estimate.worst_case_usd)
    assert estimate.worst_case_at(30) == pytest.approx(estimate.worst_case_usd * 2100 / 3900)
    basis = " ".join(estimate.basis())
    assert "worst case if spike dies: every injector lives to its TTL of 60 min (+5 min" in basis
    assert "3900 s each at on-demand" in basis
    assert "approximate list prices as of 2025-06-01 (built in)" in basis
    assert "spike prices --refresh" in basis


def test_without_a_ttl_there_is_no_worst_case() -> None:
    estimate = estimate_cost(
        make_plan({"eu-west-2": 1}), "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=8
    )
    assert estimate.worst_case_usd is None and estimate.worst_case_billed_s is None
    assert estimate.to_dict()["worst_case_usd"] is None
    assert not any("worst case" in line for line in estimate.basis())


def test_worst_case_is_never_below_the_planned_lifetime() -> None:
    # A TTL shorter than the run (check_ttl refuses it) must not make the worst case look cheaper.
    plan = make_plan({"eu-west-2": 1}, duration_s=7200)
    estimate = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0, ttl_minutes=10)
    assert estimate.worst_case_billed_s == 7200
    assert estimate.worst_case_usd == pytest.approx(estimate.total_usd)


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
def test_estimate_refuses_a_non_positive_ttl(ttl: float) -> None:
    with pytest.raises(BadInputError, match="--ttl must be a number of minutes > 0"):
        estimate_cost(
            make_plan({"eu-west-2": 1}),
            "c6i.large",
            PRICES,
            boot_s=0,
            teardown_s=0,
            root_gb=8,
            ttl_minutes=ttl,
        )


def test_budget_guards_the_worst_case_with_both_figures_and_the_fixes() -> None:
    plan = make_plan({"eu-west-2": 10}, duration_s=600)
    estimate = estimate_cost(
        plan, "c6i.large", PRICES, boot_s=180, teardown_s=120, root_gb=0, ttl_minutes=120
    )
    # 10 x 900 s x 0.101/h = $0.2525; worst 10 x 7500 s x 0.101/h = $2.104.
    assert estimate.total_usd == pytest.approx(0.2525)
    assert estimate.worst_case_usd == pytest.approx(10 * 7500 / 3600 * 0.101)
    check_budget(estimate, 2.11)
    with pytest.raises(BadInputError) as caught:
        check_budget(estimate, 1.0)
    text = caught.value.render()
    assert "the run would cost about $0.25, within the budget of $1.00" in text
    assert "if spike dies every injector lives to its TTL of 120 min and the worst case is $2.10" in text
    assert "eu-west-2 $2.10 (10 x c6i.large); 7500 s billed per instance at on-demand" in text
    # $1.00 buys 1.0 / (10 x 0.101 / 3600) = 3564 s; minus the 300 s slack: 54 min. The run needs 20.
    assert "lower --ttl to 54 minutes or less (the run needs at least 20)" in text
    assert "use fewer injectors" in text
    assert "raise --max-cost to at least 2.11" in text
    # The TTL it suggests really fits, one minute more does not.
    assert estimate.worst_case_at(54) <= 1.0 < estimate.worst_case_at(55)


def test_budget_does_not_suggest_a_ttl_the_run_cannot_fit_in() -> None:
    plan = make_plan({"eu-west-2": 10}, duration_s=3000)
    estimate = estimate_cost(
        plan, "c6i.large", PRICES, boot_s=180, teardown_s=120, root_gb=0, ttl_minutes=120
    )
    # $1.00 fits 3564 s of worst case, a TTL of 54 min; the 55-minute run needs 61.
    assert estimate.total_usd < 1.0
    with pytest.raises(BadInputError) as caught:
        check_budget(estimate, 1.0)
    text = caught.value.render()
    assert "lower --ttl" not in text
    assert "use fewer injectors" in text and "raise --max-cost to at least" in text


def test_an_estimate_over_budget_names_the_worst_case_too() -> None:
    plan = make_plan({"eu-west-2": 10, "us-east-1": 10}, duration_s=3600)
    estimate = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0, ttl_minutes=120)
    with pytest.raises(BadInputError) as caught:
        check_budget(estimate, 1.5)
    text = caught.value.render()
    worst = estimate.worst_case_usd
    assert worst is not None
    assert (
        f"cost about $1.86 (worst case ${worst:.2f} if spike dies and every injector lives to its TTL of 120 min)"
        in text
    )
    assert "over the budget of $1.50" in text
    assert f"raise --max-cost to at least {math.ceil(worst * 100) / 100:.2f}" in text


def test_a_spot_worst_case_is_priced_at_on_demand() -> None:
    plan = make_plan({"eu-west-2": 4}, duration_s=600)
    spot = estimate_cost(
        plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0, use_spot=True, ttl_minutes=60
    )
    on_demand = estimate_cost(plan, "c6i.large", PRICES, boot_s=0, teardown_s=0, root_gb=0, ttl_minutes=60)
    assert spot.total_usd == pytest.approx(on_demand.total_usd * 0.4)
    assert spot.worst_case_usd == pytest.approx(on_demand.worst_case_usd)
