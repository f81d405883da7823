import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadorch.cli.main import app

runner = CliRunner()


def test_profiles_list_shows_builtins() -> None:
    result = runner.invoke(app, ["profiles", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("smoke", "viral-x3", "viral-x10", "weekly-resilience"):
        assert name in result.output


def test_profiles_show_prints_yaml() -> None:
    result = runner.invoke(app, ["profiles", "show", "viral-x10"])
    assert result.exit_code == 0
    assert "multiplier: 10" in result.output


def test_profiles_validate_reports_each_file(tmp_path: Path) -> None:
    good = Path(__file__).parents[2] / "loadorch/profiles/builtin/smoke.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nname: y\n")
    result = runner.invoke(app, ["profiles", "validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert "profile 'smoke' is valid" in result.output
    assert f"{bad}:2:1: duplicate key 'name'" in result.output


def test_plan_json_is_deterministic_in_shape_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["plan", "--profile", "viral-x10", "--regions", "eu-west-2,us-east-1", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["name"] for r in data["regions"]] == ["eu-west-2", "us-east-1"]
    assert data["peak_rate_per_s"] == 300
    assert data["planned_requests"] == pytest.approx(data["planned_users"] * 2)
    assert list(tmp_path.iterdir()) == []


def test_plan_table_has_chart() -> None:
    result = runner.invoke(app, ["plan", "--profile", "smoke"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "duration 20 s" in result.output
    assert "█" in result.output


def test_unknown_profile_and_provider_exit_2() -> None:
    result = runner.invoke(app, ["plan", "--profile", "nope"])
    assert result.exit_code == 2
    assert "unknown profile 'nope'" in result.output
    result = runner.invoke(app, ["plan", "--profile", "smoke", "--provider", "gcp"])
    assert result.exit_code == 2
    assert "valid values: local" in result.output


def test_doctor_lists_prerequisites() -> None:
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "250"})
    assert result.exit_code in (0, 3)
    for name in ("java", "maven", "gatling build cache", "terraform", "sshd", "influxd"):
        assert name in result.output


def test_target_serve_refuses_a_non_loopback_host() -> None:
    result = runner.invoke(app, ["target", "serve", "--host", "shop.invalid", "--port", "0"])
    assert result.exit_code == 2
    assert "shop.invalid" in result.output and "loopback" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert "Gatling 3.11.5" in result.output
