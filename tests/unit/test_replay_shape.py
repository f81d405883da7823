"""The `replay` shape: a recorded curve from a CSV next to the profile, scaled and sped up."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadorch.errors import ProfileError
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.plan.shapes import profile_curve
from loadorch.profiles.loader import load_profile

BUILTIN = Path(__file__).parents[2] / "loadorch" / "profiles" / "builtin"


def replay_profile(
    tmp_path: Path, shape: str, curve: str | None = "t_s,rate_per_s\n0,10\n60,100\n90,100\n120,10\n"
) -> Path:
    (tmp_path / "posts.csv").write_text((BUILTIN / "posts.csv").read_text())
    if curve is not None:
        (tmp_path / "curve.csv").write_text(curve)
    path = tmp_path / "replay.yaml"
    path.write_text(
        f"""\
name: replayed
target: {{base_url: "http://127.0.0.1:8080"}}
baseline_rate_per_s: 10
shape:
{shape}scenario:
  requests:
    - {{name: read_feed, path: "/feed?page=1"}}
regions:
  - {{name: eu-west-2}}
  - {{name: us-east-1}}
injector: {{max_rate_per_s: 80}}
"""
    )
    return path


def test_a_curve_file_becomes_the_profiles_curve_and_plans_like_any_other(tmp_path: Path) -> None:
    loaded = load_profile(replay_profile(tmp_path, "  kind: replay\n  curve_file: curve.csv\n"))
    curve = profile_curve(loaded.profile)
    assert curve.points == ((0, 10), (60, 100), (90, 100), (120, 10))
    assert curve.total_users == pytest.approx(0.5 * 60 * 110 + 30 * 100 + 0.5 * 30 * 110)
    plan = plan_run(loaded.profile, PlanOptions(now_ms=1_000_000))
    assert sum(r.curve.total_users for r in plan.regions) == pytest.approx(curve.total_users)
    assert [len(r.injectors) for r in plan.regions] == [1, 1]  # 50/s per region under 80


def test_speedup_compresses_time_and_keeps_the_users_scale_multiplies(tmp_path: Path) -> None:
    loaded = load_profile(
        replay_profile(tmp_path, "  kind: replay\n  curve_file: curve.csv\n  speedup: 2\n  scale: 3\n")
    )
    curve = profile_curve(loaded.profile)
    assert curve.points == ((0, 60), (30, 600), (45, 600), (60, 60))
    assert curve.total_users == pytest.approx(3 * (0.5 * 60 * 110 + 30 * 100 + 0.5 * 30 * 110))


def test_inline_points_need_no_file(tmp_path: Path) -> None:
    loaded = load_profile(
        replay_profile(tmp_path, "  kind: replay\n  points: [[0, 5], [10, 5]]\n", curve=None)
    )
    assert profile_curve(loaded.profile).total_users == 50


@pytest.mark.parametrize(
    ("shape", "curve", "message"),
    [
        (
            "  kind: replay\n  curve_file: curve.csv\n",
            "time,rate\n0,1\n",
            "expected the header t_s,rate_per_s",
        ),
        (
            "  kind: replay\n  curve_file: curve.csv\n",
            "t_s,rate_per_s\n0,1\n20,2\n10,3\n",
            "times go backwards",
        ),
        (
            "  kind: replay\n  curve_file: curve.csv\n",
            "t_s,rate_per_s\n0,1\nten,2\n",
            "curve.csv:3: not two numbers",
        ),
        ("  kind: replay\n  curve_file: missing.csv\n", None, "cannot read the replay curve"),
        (
            "  kind: replay\n  curve_file: curve.csv\n  points: [[0, 1], [5, 1]]\n",
            "t_s,rate_per_s\n0,1\n5,1\n",
            "exactly one",
        ),
        ("  kind: replays\n", None, "one of 'viral', 'steps', 'replay'"),
    ],
)
def test_bad_replay_curves_are_refused_with_where(
    tmp_path: Path, shape: str, curve: str | None, message: str
) -> None:
    path = replay_profile(tmp_path, shape, curve=curve)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    text = caught.value.render()
    assert message in text
    assert f"{path}:" in text
