import math

import pytest

from loadorch.curve import RateCurve


def test_users_is_area_under_the_curve() -> None:
    curve = RateCurve.from_points([(0, 10), (10, 10), (20, 30)])
    assert curve.total_users == pytest.approx(10 * 10 + (10 + 30) / 2 * 10)
    assert curve.peak_rate == 30
    assert curve.duration_s == 20


def test_users_per_second_sums_to_total_and_follows_ramp() -> None:
    curve = RateCurve.from_points([(0, 0), (4, 8)])
    per_second = curve.users_per_second()
    assert per_second == pytest.approx([1, 3, 5, 7])
    assert sum(per_second) == pytest.approx(curve.total_users)


def test_jump_carries_no_users_and_later_rate_holds_at_the_jump() -> None:
    curve = RateCurve.from_points([(0, 5), (10, 5), (10, 50), (20, 50)])
    assert curve.total_users == pytest.approx(50 + 500)
    assert curve.rate_at(10) == 50
    assert len(list(curve.segments())) == 2


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(0, 1)], "at least two points"),
        ([(1, 1), (2, 1)], "starts at t=0"),
        ([(0, 1), (5, 1), (3, 1)], "must not decrease"),
        ([(0, 1), (5, -1)], ">= 0"),
        ([(0, 1), (5, math.inf)], "finite"),
    ],
)
def test_invalid_curves_are_refused(points: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateCurve.from_points(points)


def test_simplified_drops_collinear_points_only() -> None:
    curve = RateCurve.from_points([(0, 0), (1, 1), (2, 2), (3, 2), (3, 9), (4, 9)])
    assert curve.simplified().points == ((0, 0), (2, 2), (3, 2), (3, 9), (4, 9))


def test_encode_is_compact_and_exact_enough() -> None:
    curve = RateCurve.from_points([(0, 1.5), (10, 1 / 3)])
    assert curve.encode() == "0:1.5,10:0.333333"


def test_scaled_multiplies_rates() -> None:
    curve = RateCurve.from_points([(0, 2), (5, 4)]).scaled(0.5)
    assert curve.points == ((0, 1), (5, 2))
