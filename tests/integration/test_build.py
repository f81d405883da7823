"""Rendered simulations compile with Maven, once per scenario."""

from pathlib import Path

import pytest

from loadorch.engine.gatling import build
from loadorch.engine.gatling.render import render_simulation
from loadorch.errors import BuildError
from loadorch.profiles.loader import load_profile


def test_builtin_simulation_compiles_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = render_simulation(load_profile("weekly-resilience").profile)
    compiled = build.compile_simulation(source, tmp_path)
    assert (compiled.classes_dir / "spike" / "SpikeSimulation.class").is_file()
    assert any("gatling-app-3.11.5.jar" in jar for jar in compiled.dependency_jars)
    assert compiled.source_path.read_text() == source

    def no_maven(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged scenario was recompiled")

    monkeypatch.setattr(build, "run_command", no_maven)
    again = build.compile_simulation(source, tmp_path)
    assert again == compiled
    assert [p.name for p in tmp_path.iterdir()] == [compiled.key]  # no half-built leftovers


def test_compile_error_is_reported_with_the_source_path(tmp_path: Path) -> None:
    broken = render_simulation(load_profile("smoke").profile).replace("setUp(", "setUp((")
    with pytest.raises(BuildError) as info:
        build.compile_simulation(broken, tmp_path)
    text = info.value.render()
    assert "SpikeSimulation.scala" in text
    assert "compiling the Gatling simulation failed" in text
    assert list(tmp_path.iterdir()) == []  # nothing half-built is left in the cache
