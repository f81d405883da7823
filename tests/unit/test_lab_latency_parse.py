"""The lab's latency table and `--latency` parsing: pure, no toxiproxy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadorch.errors import BadInputError, InfrastructureError, PreflightError
from loadorch.lab import latency
from loadorch.lab.latency import (
    DEFAULT_LATENCY_MS,
    Latencies,
    find_toxiproxy,
    parse_latencies,
    split_round_trip,
)
from loadorch.providers.terraform.config import AWS_REGIONS

# ---------------------------------------------------------------- the default table


def test_every_commercial_region_has_a_latency_and_nothing_else() -> None:
    assert sorted(DEFAULT_LATENCY_MS) == sorted(AWS_REGIONS)


def test_issue_anchors() -> None:
    assert DEFAULT_LATENCY_MS["eu-west-2"] == 5.0
    assert DEFAULT_LATENCY_MS["us-east-1"] == 40.0
    assert DEFAULT_LATENCY_MS["ap-southeast-1"] == 120.0


def test_the_target_region_is_nearest_and_tiers_rise_with_distance() -> None:
    assert min(DEFAULT_LATENCY_MS, key=DEFAULT_LATENCY_MS.__getitem__) == "eu-west-2"
    assert sorted(DEFAULT_LATENCY_MS.values()).count(5.0) == 1
    # A few orderings any map agrees with, seen from London.
    table = DEFAULT_LATENCY_MS
    assert table["eu-west-1"] < table["eu-north-1"] < table["us-east-1"] < table["us-west-2"]
    assert table["us-west-2"] < table["sa-east-1"] < table["ap-northeast-1"] < table["ap-southeast-2"]
    assert all(0 < value <= latency.MAX_LATENCY_MS for value in table.values())


def test_each_region_sits_in_exactly_one_tier() -> None:
    named = [region for _, _, regions in latency._TIERS for region in regions]
    assert len(named) == len(set(named)) == len(DEFAULT_LATENCY_MS)
    values = [value for value, _, _ in latency._TIERS]
    assert values == sorted(values) and len(set(values)) == len(values)


# ---------------------------------------------------------------- parse_latencies


def test_plain_items() -> None:
    parsed = parse_latencies("eu-west-2=5,us-east-1=40")
    assert parsed == {"eu-west-2": 5.0, "us-east-1": 40.0}
    assert isinstance(parsed, dict) and isinstance(parsed, Latencies)
    assert parsed.jitter("eu-west-2") == 0.0 and parsed.jitter_ms == {}


def test_ms_suffix_spaces_decimals_and_jitter() -> None:
    parsed = parse_latencies(" eu-west-2 = 5ms , us-east-1=40/5 , ap-southeast-1=120.5MS/10ms ")
    assert parsed == {"eu-west-2": 5.0, "us-east-1": 40.0, "ap-southeast-1": 120.5}
    assert parsed.jitter_ms == {"us-east-1": 5.0, "ap-southeast-1": 10.0}
    assert parsed.jitter("us-east-1") == 5.0
    assert parsed.jitter("eu-west-2") == 0.0


def test_zero_is_allowed_and_jitter_equal_to_latency_too() -> None:
    parsed = parse_latencies("eu-west-2=0,us-east-1=10/10")
    assert parsed == {"eu-west-2": 0.0, "us-east-1": 10.0}
    assert parsed.jitter("us-east-1") == 10.0


def test_insertion_order_follows_the_text() -> None:
    assert list(parse_latencies("us-east-1=40,eu-west-2=5")) == ["us-east-1", "eu-west-2"]


@pytest.mark.parametrize(
    ("text", "message_part", "fix_part"),
    [
        ("", "no latencies given", "REGION=MS"),
        ("   ", "no latencies given", "REGION=MS"),
        ("eu-west-2=5,,us-east-1=40", "empty item", "REGION=MS"),
        ("eu-west-2=5,", "empty item", "REGION=MS"),
        ("eu-west-2", "'eu-west-2' is not REGION=MS", "REGION=MS"),
        ("=5", "'=5' is not REGION=MS", "REGION=MS"),
        ("eu-west-2=", "'eu-west-2=' is not REGION=MS", "REGION=MS"),
        ("eu-west2=5", "unknown region 'eu-west2' in latency item 'eu-west2=5'", "eu-west-2"),
        ("eu-west-2=5,eu-west-2=6", "'eu-west-2' is given twice (again in 'eu-west-2=6')", "once"),
        ("us-east-1=fast", "latency 'fast' in latency item 'us-east-1=fast' is not a number", "40/5"),
        ("us-east-1=40s", "latency '40s' in latency item 'us-east-1=40s' is not a number", "ms"),
        ("us-east-1=40±5", "'40±5' in latency item", "REGION=MS[/JITTER]"),
        ("us-east-1=40/x", "jitter 'x' in latency item 'us-east-1=40/x' is not a number", "REGION=MS"),
        ("us-east-1=40/", "jitter '' in latency item 'us-east-1=40/' is not a number", "REGION=MS"),
        ("us-east-1=-1", "latency '-1' in latency item 'us-east-1=-1' is outside 0..10000 ms", "between 0"),
        ("us-east-1=20000", "latency '20000' in latency item 'us-east-1=20000' is outside", "10000"),
        ("us-east-1=nan", "latency 'nan' in latency item 'us-east-1=nan' is outside", "between 0"),
        ("us-east-1=inf", "is outside 0..10000 ms", "between 0"),
        (
            "us-east-1=5/10",
            "jitter 10 ms exceeds latency 5 ms in latency item 'us-east-1=5/10'",
            "at or below",
        ),
    ],
)
def test_bad_items_name_the_item_and_the_fix(text: str, message_part: str, fix_part: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_latencies(text)
    error = caught.value
    assert message_part in error.message
    assert error.where == "--latency"
    assert error.fix is not None and fix_part in error.fix


# ---------------------------------------------------------------- how a round trip is split


@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, (0, 0)), (1, (0, 1)), (5, (2, 3)), (40, (20, 20)), (120, (60, 60)), (2.5, (1, 2)), (2.4, (1, 1))],
)
def test_split_round_trip_adds_up_to_the_rounded_total(total: float, expected: tuple[int, int]) -> None:
    assert split_round_trip(total) == expected
    assert sum(split_round_trip(total)) == int(total + 0.5)


# ---------------------------------------------------------------- finding the binary


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_toxiproxy_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPIKE_TOXIPROXY", "/opt/elsewhere/toxiproxy-server")
    assert find_toxiproxy() == "/opt/elsewhere/toxiproxy-server"


def test_find_toxiproxy_then_the_checkout_then_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SPIKE_TOXIPROXY", raising=False)
    repo = tmp_path / "repo"
    monkeypatch.setattr(latency, "_REPO", repo)
    on_path = _executable(tmp_path / "bin" / "toxiproxy-server")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_toxiproxy() == str(on_path)
    built = _executable(repo / ".tools" / "bin" / "toxiproxy-server")
    assert find_toxiproxy() == str(built)


def test_find_toxiproxy_none_when_nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SPIKE_TOXIPROXY", raising=False)
    monkeypatch.setattr(latency, "_REPO", tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_toxiproxy() is None


def test_the_checkout_default_points_at_make_toxiproxys_output() -> None:
    # The Makefile builds into $(CURDIR)/.tools/bin; latency.py must look in that same place.
    repo = Path(latency.__file__).resolve().parents[2]
    makefile = (repo / "Makefile").read_text()
    assert "$(CURDIR)/.tools/bin" in makefile
    assert f"TOXIPROXY_VERSION ?= v{latency.TOXIPROXY_VERSION}" in makefile
    assert os.path.samefile(latency._REPO, repo)


def test_start_without_a_binary_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(latency, "find_toxiproxy", lambda: None)
    proxy = latency.LatencyProxy(tmp_path / "state")
    with pytest.raises(PreflightError) as caught:
        proxy.start()
    assert "toxiproxy-server is not installed" in caught.value.message
    assert caught.value.fix is not None and "make toxiproxy" in caught.value.fix
    with pytest.raises(InfrastructureError, match="not running"):
        _ = proxy.api_url
    assert proxy.pid is None


# ---------------------------------------------------------------- spike doctor


def test_doctor_reports_toxiproxy_and_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loadorch.doctor import run_checks, toxiproxy_check

    fake = _executable(tmp_path / "toxiproxy-server")
    fake.write_text("#!/bin/sh\necho 'toxiproxy-server version 2.5.0'\n")
    monkeypatch.setenv("SPIKE_TOXIPROXY", str(fake))
    check = toxiproxy_check()
    assert check.ok and not check.required
    assert check.version == f"2.5.0 at {fake} (spike pins {latency.TOXIPROXY_VERSION})"

    fake.write_text(f"#!/bin/sh\necho 'toxiproxy-server version {latency.TOXIPROXY_VERSION}'\n")
    assert toxiproxy_check().version == f"{latency.TOXIPROXY_VERSION} at {fake}"

    monkeypatch.setenv("SPIKE_TOXIPROXY", str(tmp_path / "absent"))
    check = toxiproxy_check()
    assert not check.ok and "does not run as toxiproxy-server" in check.version
    assert "make toxiproxy" in check.fix

    monkeypatch.delenv("SPIKE_TOXIPROXY")
    monkeypatch.setattr(latency, "_REPO", tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    check = toxiproxy_check()
    assert (check.ok, check.version) == (False, "missing")
    assert "toxiproxy" in [c.name for c in run_checks()]
