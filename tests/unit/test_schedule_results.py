"""JUnit XML and the verdict record read the typed run result."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from loadorch.run.result import RunResult, SloResult, Verdict
from loadorch.schedule.results import junit_xml, verdict_record

BASE = RunResult(
    run_id="weekly-1",
    profile="weekly",
    provider="local",
    target="http://127.0.0.1:8080",
    start_at_ms=1_790_000_000_000,
    duration_s=60,
    planned_users=600,
    planned_requests=600,
    verdict=Verdict.PASSED,
    reasons=("every SLO met",),
    run_dir="runs/weekly-1",
    slos=(
        SloResult("error rate <= 1.00%", 0.01, 0.0, True),
        SloResult("p95 latency of all requests <= 300 ms", 300, 420, False),
    ),
)


def counts(xml: str) -> tuple[int, int, int]:
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    return int(suite.get("tests", -1)), int(suite.get("failures", -1)), int(suite.get("errors", -1))


@pytest.mark.parametrize(
    ("verdict", "criterion", "expected"),
    [
        (Verdict.PASSED, None, (3, 1, 0)),
        (Verdict.FAILED, None, (3, 2, 0)),
        (Verdict.ABORTED, "error rate above 50% for 5 s", (3, 2, 0)),
        (Verdict.INVALID, None, (3, 1, 1)),
        (Verdict.DEGRADED, None, (3, 1, 1)),
        (Verdict.ABORTED, None, (3, 1, 1)),
    ],
)
def test_junit_counts_failures_and_errors_by_verdict(
    verdict: Verdict, criterion: str | None, expected: tuple[int, int, int]
) -> None:
    xml = junit_xml(replace(BASE, verdict=verdict, abort_criterion=criterion))
    assert counts(xml) == expected
    assert "observed 420, limit 300" in xml
    assert f'<property name="verdict" value="{verdict.value}" />' in xml


def test_verdict_record_is_the_result() -> None:
    when = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    record = verdict_record(
        replace(BASE, verdict=Verdict.INVALID, reasons=("not a valid measurement: r1-1: stalled",)),
        schedule="weekly",
        exit_code=3,
        started=when,
        ended=when,
        missed=[],
        junit_path=None,
    )
    assert record["verdict"] == "invalid" and record["reason"] == "not a valid measurement: r1-1: stalled"
    assert record["slos"][1] == {
        "name": "p95 latency of all requests <= 300 ms",
        "threshold": 300,
        "actual": 420,
        "passed": False,
    }
