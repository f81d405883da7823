"""Noise-aware run comparison, `compare_to_baseline`, and the `history`/`compare` CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from test_history import START, make_summary
from typer.testing import CliRunner

from loadorch.cli.history import compare, history
from loadorch.errors import BadInputError
from loadorch.history.compare import Tolerances, compare_runs, compare_to_baseline
from loadorch.history.registry import record_from_summary, record_run

runner = CliRunner()


def run(run_id: str, **requests: tuple[int, int, int, int, int]):
    return record_from_summary(make_summary(run_id, requests=requests or None))


def test_identical_runs_are_ok() -> None:
    c = compare_runs(run("a"), run("b"))
    assert c.verdict == "ok" and c.regressed_requests == []
    assert [r.scope for r in c.rows] == ["all requests", "post", "read_feed"]
    assert {r.status for r in c.rows} == {"ok"}


def test_small_absolute_growth_on_tiny_latency_is_noise() -> None:
    # p95 10 -> 13 ms is +30%, but within the 5 ms absolute allowance
    c = compare_runs(run("a", x=(1000, 0, 5, 10, 20)), run("b", x=(1000, 0, 5, 13, 20)))
    p95 = c.rows[1].metric("p95")
    assert (p95.status, p95.delta, p95.delta_pct) == ("ok", 3, 30)
    assert c.verdict == "ok"


def test_forty_percent_growth_regresses() -> None:
    c = compare_runs(run("a", x=(1000, 0, 50, 100, 200)), run("b", x=(1000, 0, 50, 140, 200)))
    assert c.rows[1].metric("p95").status == "regressed"
    assert c.rows[1].status == "regressed"
    assert c.verdict == "regressed" and c.regressed_requests == ["x"]
    assert c.to_dict()["rows"][1]["metrics"]["p95"]["delta_pct"] == 40.0


def test_latency_just_inside_and_outside_relative_allowance() -> None:
    base = run("a", x=(1000, 0, 50, 200, 400))
    assert compare_runs(base, run("b", x=(1000, 0, 50, 220, 400))).rows[1].metric("p95").status == "ok"
    assert compare_runs(base, run("b", x=(1000, 0, 50, 221, 400))).rows[1].metric("p95").status == "regressed"
    assert compare_runs(base, run("b", x=(1000, 0, 50, 150, 400))).rows[1].metric("p95").status == "improved"


def test_small_sample_is_insufficient_never_regressed() -> None:
    c = compare_runs(run("a", x=(50, 0, 5, 10, 20)), run("b", x=(50, 25, 500, 1000, 2000)))
    assert c.rows[1].status == "insufficient"
    assert {m.status for m in c.rows[1].metrics} == {"insufficient"}
    assert c.verdict == "ok"


def test_request_in_one_run_only_is_insufficient() -> None:
    c = compare_runs(
        run("a", x=(1000, 0, 5, 10, 20), y=(1000, 0, 5, 10, 20)), run("b", x=(1000, 0, 5, 10, 20))
    )
    y = next(r for r in c.rows if r.scope == "y")
    assert (y.status, y.candidate_count) == ("insufficient", 0)
    assert "only in the baseline: y" in c.notes


@pytest.mark.parametrize(
    ("base_ko", "cand_ko", "status"),
    [
        (0, 4, "ok"),  # 0% -> 0.4%: under +0.5 points
        (0, 6, "regressed"),  # 0% -> 0.6%
        (100, 140, "ok"),  # 10% -> 14%: under x1.5
        (100, 160, "regressed"),  # 10% -> 16%
        (100, 50, "improved"),
    ],
)
def test_error_rate_rule(base_ko: int, cand_ko: int, status: str) -> None:
    c = compare_runs(run("a", x=(1000, base_ko, 5, 10, 20)), run("b", x=(1000, cand_ko, 5, 10, 20)))
    assert c.rows[1].metric("error_rate").status == status


def test_throughput_drop() -> None:
    base = record_from_summary(make_summary("a", requests={"x": (1000, 0, 5, 10, 20)}, duration_s=10))
    slower = record_from_summary(make_summary("b", requests={"x": (940, 0, 5, 10, 20)}, duration_s=10))
    fine = record_from_summary(make_summary("c", requests={"x": (960, 0, 5, 10, 20)}, duration_s=10))
    assert compare_runs(base, slower).rows[0].metric("throughput_rps").status == "regressed"
    assert compare_runs(base, fine).rows[0].metric("throughput_rps").status == "ok"


def test_custom_tolerances_and_validation() -> None:
    strict = Tolerances(latency_rel=0.0, latency_abs_ms=1.0, min_samples=10)
    c = compare_runs(run("a", x=(50, 0, 5, 10, 20)), run("b", x=(50, 0, 5, 12, 20)), strict)
    assert c.rows[1].metric("p95").status == "regressed"
    with pytest.raises(BadInputError):
        Tolerances(latency_rel=-1)
    with pytest.raises(BadInputError):
        Tolerances(error_rate_factor=0.5)


def test_compare_to_last_passing(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    candidate = make_summary("new", start_ms=START + 10, requests={"x": (1000, 0, 50, 200, 300)})
    assert compare_to_baseline(candidate, "last-passing", "viral-x10", db=db) is None
    record_run(
        make_summary("old", requests={"x": (1000, 0, 50, 100, 300)}),
        profile="viral-x10",
        plan_digest="d",
        provider="local",
        db=db,
    )
    record_run(
        make_summary("bad", start_ms=START + 5, verdict="failed"),
        profile="viral-x10",
        plan_digest="d",
        provider="local",
        db=db,
    )
    c = compare_to_baseline(candidate, "last-passing", "viral-x10", plan_digest="d", db=db)
    assert c is not None and c.baseline_run_id == "old" and c.verdict == "regressed"
    assert c.notes == ()
    by_id = compare_to_baseline(candidate, "bad", "viral-x10", db=db)
    assert by_id is not None and "the baseline's verdict is failed, not passed" in by_id.notes
    with pytest.raises(BadInputError):
        compare_to_baseline(candidate, "missing", "viral-x10", db=db)
    record_run(candidate, profile="viral-x10", plan_digest="d", provider="local", db=db)
    with pytest.raises(BadInputError, match="its own baseline"):
        compare_to_baseline(candidate, "new", "viral-x10", db=db)


# -- CLI ---------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("history")(history)
    app.command("compare")(compare)
    return app


@pytest.fixture
def db(tmp_path: Path) -> Path:
    db = tmp_path / "h.sqlite"
    for run_id, start, p95 in (("base", START, 100), ("same", START + 1, 103), ("worse", START + 2, 160)):
        summary = make_summary(
            run_id, start_ms=start, requests={"feed": (1000, 0, 50, p95, 300), "post": (20, 0, 5, 9, 9)}
        )
        record_run(summary, profile="viral-x10", plan_digest="d", provider="local", db=db)
    return db


def test_cli_history_table_and_json(db: Path) -> None:
    result = runner.invoke(cli(), ["history", "--db", str(db)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.index("worse") < result.output.index("same") < result.output.index("base")
    assert "passed" in result.output and "2026" not in result.output.split("\n")[0]
    result = runner.invoke(cli(), ["history", "--db", str(db), "--json", "--limit", "2", "-p", "viral-x10"])
    assert result.exit_code == 0, result.output
    assert [r["run_id"] for r in json.loads(result.output)] == ["worse", "same"]
    result = runner.invoke(cli(), ["history", "--db", str(db), "-p", "other"])
    assert result.exit_code == 0 and "no recorded runs of profile other" in result.output


def test_cli_compare_ok_regressed_unknown(db: Path) -> None:
    ok = runner.invoke(cli(), ["compare", "base", "same", "--db", str(db)], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "no regression" in ok.output and "insufficient" in ok.output  # post has 20 samples
    bad = runner.invoke(cli(), ["compare", "base", "worse", "--db", str(db)], env={"COLUMNS": "200"})
    assert bad.exit_code == 1, bad.output
    assert "regressed: feed" in bad.output
    as_json = runner.invoke(cli(), ["compare", "base", "worse", "--db", str(db), "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert data["verdict"] == "regressed" and data["regressed_requests"] == ["feed"]
    unknown = runner.invoke(cli(), ["compare", "base", "wrose", "--db", str(db)])
    assert unknown.exit_code == 2
    assert "worse" in unknown.output  # the close id is suggested
