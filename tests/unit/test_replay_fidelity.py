"""A replay run judged against its recording: the recording mapped like the curve, MAPE and correlation."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadorch.errors import BadInputError
from loadorch.replay.fidelity import read_recorded, replay_fidelity


def test_the_recording_is_mapped_onto_the_run_like_the_curve(tmp_path: Path) -> None:
    path = tmp_path / "recorded.csv"
    path.write_text("second,count\n0,10\n1,20\n2,30\n3,40\n")
    assert read_recorded(path) == [10, 20, 30, 40]
    # twice as fast: two recorded seconds per run second; scale 3 multiplies
    assert read_recorded(path, scale=3, speedup=2) == [90, 210]


def test_mape_only_where_the_recording_is_busy_and_correlation_everywhere() -> None:
    recorded = [10.0, 100.0, 200.0, 100.0, 10.0]
    achieved = [30, 110, 190, 100, 0]  # the quiet seconds are far off, the busy ones close
    result = replay_fidelity(recorded, achieved, min_rate=50)
    assert result["seconds_in_mape"] == 3
    assert result["mape_pct"] == pytest.approx(100 * (0.1 + 0.05 + 0) / 3, abs=1e-3)
    assert result["correlation"] is not None and result["correlation"] > 0.98
    assert replay_fidelity([1.0, 1.0], [1, 1])["correlation"] is None  # no variance: undefined


def test_a_run_a_second_late_is_aligned_and_says_so() -> None:
    recorded = [10.0, 60.0, 120.0, 180.0, 120.0, 60.0, 10.0, 10.0]
    late = [0, 10, 60, 120, 180, 120, 60, 10]  # the same curve, one second later
    result = replay_fidelity(recorded, late, min_rate=50)
    assert result["lag_s"] == 1 and result["mape_pct"] == 0 and result["correlation"] > 0.99


def test_a_bad_recording_is_named(tmp_path: Path) -> None:
    path = tmp_path / "recorded.csv"
    path.write_text("second,count\n0,10\nx,1\n")
    with pytest.raises(BadInputError, match=r"recorded.csv:3: not a second and a count"):
        read_recorded(path)
