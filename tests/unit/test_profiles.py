from pathlib import Path

import pytest

from loadorch.errors import ProfileError
from loadorch.profiles.loader import builtin_names, load_profile, parse_profile

VALID = """\
name: mini
target:
  base_url: http://127.0.0.1:8080/
baseline_rate_per_s: 5
shape:
  kind: steps
  steps:
    - {duration_s: 10, rate_per_s: 5}
scenario:
  requests:
    - {name: home, path: /}
"""


def parse(text: str, tmp_path: Path, name: str = "p.yaml") -> object:
    path = tmp_path / name
    path.write_text(text)
    return load_profile(path)


def error(text: str, tmp_path: Path) -> str:
    with pytest.raises(ProfileError) as info:
        parse(text, tmp_path)
    return info.value.render()


def test_builtins_are_valid() -> None:
    assert builtin_names() == ["smoke", "viral-x10", "viral-x3", "weekly-resilience"]
    for name in builtin_names():
        loaded = load_profile(name)
        assert loaded.profile.name == name
        assert Path(loaded.profile.scenario.feeders[0].file).is_absolute()


def test_minimal_profile_gets_defaults(tmp_path: Path) -> None:
    loaded = parse(VALID, tmp_path)
    profile = loaded.profile  # type: ignore[attr-defined]
    assert profile.target.base_url == "http://127.0.0.1:8080"
    assert [r.name for r in profile.regions] == ["local"]
    assert profile.scenario.requests[0].method == "GET"
    assert profile.scenario.requests[0].expect_status == (200,)


def test_models_are_frozen(tmp_path: Path) -> None:
    profile = parse(VALID, tmp_path).profile  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="frozen"):
        profile.name = "other"


def test_unknown_key_names_file_line_column_and_valid_keys(tmp_path: Path) -> None:
    text = VALID.replace("baseline_rate_per_s: 5", "baseline_rate_per_s: 5\nbaseline_rps: 7")
    message = error(text, tmp_path)
    assert f"{tmp_path / 'p.yaml'}:5:1" in message
    assert "unknown key 'baseline_rps'" in message
    assert "valid keys: name, description, target" in message


def test_duplicate_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    message = error(VALID + "name: again\n", tmp_path)
    assert "p.yaml:12:1" in message
    assert "duplicate key 'name' (first given at line 1)" in message


def test_bad_enum_lists_valid_values(tmp_path: Path) -> None:
    message = error(VALID.replace("{name: home, path: /}", "{name: home, path: /, method: FETCH}"), tmp_path)
    assert "p.yaml:11:" in message
    assert "scenario.requests[0].method" in message
    assert "'GET', 'POST'" in message


def test_unknown_shape_kind_lists_kinds(tmp_path: Path) -> None:
    message = error(VALID.replace("kind: steps", "kind: tsunami"), tmp_path)
    assert "p.yaml:6:" in message or "p.yaml:5:" in message
    assert "'viral', 'steps'" in message


def test_viral_shape_field_errors_point_at_the_field(tmp_path: Path) -> None:
    text = VALID.replace(
        "  kind: steps\n  steps:\n    - {duration_s: 10, rate_per_s: 5}\n",
        "  kind: viral\n  growth: cubic\n  growth_s: 10\n  multiplier: 0.5\n",
    )
    message = error(text, tmp_path)
    assert "p.yaml:7:11: shape.growth: Input should be 'linear', 'exponential' or 'logistic'" in message
    assert "p.yaml:9:15: shape.multiplier" in message


def test_missing_required_key(tmp_path: Path) -> None:
    message = error(VALID.replace("baseline_rate_per_s: 5\n", ""), tmp_path)
    assert "baseline_rate_per_s: required key is missing" in message


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    message = error("name: [unclosed\n", tmp_path)
    assert "p.yaml:2:1" in message or "p.yaml:1:" in message
    assert "not valid YAML" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "a profile is a YAML mapping" in error("- just\n- a list\n", tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    assert "the profile is empty" in error("", tmp_path)


def test_placeholder_without_feeder_is_refused(tmp_path: Path) -> None:
    message = error(VALID.replace("path: /}", 'path: "/posts/{post_id}"}'), tmp_path)
    assert "p.yaml:11:" in message
    assert "{post_id}" in message and "no feeder provides" in message


def test_feeder_file_must_exist_and_have_rows(tmp_path: Path) -> None:
    text = VALID + "  feeders:\n    - {name: ids, file: ids.csv}\n"
    assert "cannot read" in error(text, tmp_path)
    (tmp_path / "ids.csv").write_text("id\n")
    assert "at least one data row" in error(text, tmp_path)
    (tmp_path / "ids.csv").write_text("id\n1\n")
    loaded = parse(text.replace("path: /}", 'path: "/x/{id}"}'), tmp_path)
    assert loaded.feeder_columns == {"ids": ("id",)}  # type: ignore[attr-defined]


def test_slo_for_unknown_request(tmp_path: Path) -> None:
    text = VALID + "slos:\n  latency:\n    - {percentile: 95, max_ms: 100, request: nope}\n"
    message = error(text, tmp_path)
    assert "'nope'" in message and "valid: home" in message


def test_slo_percentile_must_be_supported(tmp_path: Path) -> None:
    text = VALID + "slos:\n  latency:\n    - {percentile: 90, max_ms: 100}\n"
    assert "slos.latency[0].percentile" in error(text, tmp_path)


def test_bad_target_url(tmp_path: Path) -> None:
    message = error(VALID.replace("http://127.0.0.1:8080/", "127.0.0.1:8080"), tmp_path)
    assert "p.yaml:3:13: target.base_url" in message


def test_duplicate_request_names(tmp_path: Path) -> None:
    text = VALID.replace(
        "    - {name: home, path: /}", "    - {name: home, path: /}\n    - {name: home, path: /a}"
    )
    assert "request names must be unique, repeated: home" in error(text, tmp_path)


def test_unknown_builtin_lists_builtins() -> None:
    with pytest.raises(ProfileError, match="smoke, viral-x10"):
        load_profile("nope")


def test_parse_profile_reports_all_problems_sorted(tmp_path: Path) -> None:
    text = VALID.replace("baseline_rate_per_s: 5", "baseline_rate_per_s: -1").replace(
        "{name: home, path: /}", "{name: Home, path: x}"
    )
    with pytest.raises(ProfileError) as info:
        parse_profile(text, tmp_path / "q.yaml")
    rendered = info.value.render()
    assert "3 problems" in rendered
    assert rendered.index("q.yaml:4:") < rendered.index("q.yaml:11:")
