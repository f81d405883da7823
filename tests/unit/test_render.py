"""Rendering is pure: golden Scala files pin the output.

Regenerate after an intended template change with SPIKE_UPDATE_GOLDEN=1.
"""

import os
from pathlib import Path

import pytest

from loadorch.engine.gatling.render import render_assertions, render_simulation, scala_string, to_gatling_el
from loadorch.profiles.loader import load_profile, parse_profile
from loadorch.profiles.model import Slos

GOLDEN = Path(__file__).parents[1] / "golden"


@pytest.mark.parametrize("name", ["smoke", "viral-x3"])
def test_rendered_simulation_matches_golden(name: str) -> None:
    source = render_simulation(load_profile(name).profile)
    golden = GOLDEN / f"{name}.scala"
    if os.environ.get("SPIKE_UPDATE_GOLDEN"):
        golden.write_text(source)
    assert source == golden.read_text(), f"rendered {name} differs from {golden}; see the module docstring"


def test_numbers_are_not_baked_into_the_source() -> None:
    source = render_simulation(load_profile("viral-x10").profile)
    assert "127.0.0.1" not in source
    assert 'prop("spike.curve")' in source
    assert 'prop("spike.startAtMs")' in source
    assert 'csv(prop("spike.feeder.posts")).random' in source


def test_same_scenario_renders_identically() -> None:
    a = render_simulation(load_profile("viral-x3").profile)
    b = render_simulation(load_profile("viral-x3").profile)
    assert a == b


def test_placeholders_become_gatling_el_and_strings_are_escaped() -> None:
    assert to_gatling_el("/posts/{post_id}/x/{a}") == "/posts/#{post_id}/x/#{a}"
    assert to_gatling_el('{"k": 1}') == '{"k": 1}'
    assert scala_string('say "hi"\\ \n é') == '"say \\"hi\\"\\\\ \\n \\u00e9"'


def test_slos_become_assertions() -> None:
    slos = Slos.model_validate(
        {
            "error_rate_max": 0.01,
            "latency": [{"percentile": 95, "max_ms": 300}, {"percentile": 99, "max_ms": 50, "request": "a"}],
        }
    )
    assert render_assertions(slos) == [
        "global.responseTime.percentile(95.0).lte(300)",
        'details("a").responseTime.percentile(99.0).lte(50)',
        "global.failedRequests.percent.lte(1.0)",
    ]


def test_no_assertions_without_slos(tmp_path: Path) -> None:
    text = (
        "name: bare\ntarget: {base_url: 'http://127.0.0.1:1'}\nbaseline_rate_per_s: 1\n"
        "shape: {kind: steps, steps: [{duration_s: 1, rate_per_s: 1}]}\n"
        "scenario: {requests: [{name: a, path: /, method: DELETE, headers: {X-A: b}, body: 'x'}]}\n"
    )
    source = render_simulation(parse_profile(text, tmp_path / "bare.yaml").profile)
    assert ".assertions(" not in source
    assert '.delete("/")' in source
    assert '.header("X-A", "b")' in source
    assert 'StringBody("x")' in source
    assert "pause(" not in source


def test_profiles_sharing_a_scenario_share_one_source() -> None:
    # viral-x3 and viral-x10 differ only in the storm, not in what users do,
    # so they share one compiled artifact.
    assert render_simulation(load_profile("viral-x3").profile) == render_simulation(
        load_profile("viral-x10").profile
    )


def test_a_single_request_scenario_renders_without_a_switch(tmp_path) -> None:
    """Gatling's doSwitch needs two branches or more: one request is executed directly."""
    from loadorch.engine.gatling.render import render_simulation
    from loadorch.profiles.loader import parse_profile

    text = """\
name: one
target: {base_url: "http://127.0.0.1:1"}
baseline_rate_per_s: 1
shape: {kind: steps, steps: [{duration_s: 1, rate_per_s: 1}]}
scenario: {requests: [{name: only, path: /}]}
regions: [{name: r1}]
"""
    source = render_simulation(parse_profile(text, tmp_path / "one.yaml").profile)
    assert "doSwitch" not in source
    assert ".exec(req_only)" in source
