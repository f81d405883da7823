"""What a scheduled run leaves behind (pure): JUnit XML and the verdict record.

Both read the run's typed result (`loadorch.run.result.RunResult`, read back from
its summary.json): never a dict by key.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from loadorch.run.result import RunResult, Verdict


def _timestamp(result: RunResult) -> str:
    start_ms = result.start_at_ms
    moment = datetime.fromtimestamp(start_ms / 1000, UTC) if start_ms else datetime.now(UTC)
    # JUnit's schema wants local ISO 8601 without a zone; spike's is UTC
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def _number(value: Any) -> str:
    if value is None:
        return "no data"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    return str(int(value)) if isinstance(value, int | float) else str(value)


def junit_xml(result: RunResult, *, suite_name: str | None = None) -> str:
    """JUnit XML for one run: a testcase per SLO and one for the run verdict.

    A failed SLO is a <failure> with observed vs limit; the verdict case is a <failure> when
    the run failed (an SLO, a regression, a stop criterion) and an <error> when it was
    degraded, invalid, interrupted or aborted (its SLO figures cannot be trusted as a pass).
    """
    name = suite_name or f"spike.{result.profile or 'run'}"
    duration = f"{result.duration_s:.3f}"
    verdict, reason = result.verdict.value, result.reason

    suites = ET.Element("testsuites", name="spike")
    suite = ET.SubElement(suites, "testsuite", name=name, timestamp=_timestamp(result), time=duration)
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("run_id", result.run_id),
        ("profile", result.profile),
        ("provider", result.provider),
        ("target", result.target),
        ("report", result.report.path),
        ("run_dir", result.run_dir),
        ("verdict", verdict),
        ("exit_code", int(result.exit_code)),
    ):
        if value not in (None, ""):
            ET.SubElement(properties, "property", name=key, value=str(value))

    failures = errors = 0
    for slo in result.slos:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.slo", name=slo.name, time=duration)
        if not slo.passed:
            failures += 1
            observed, limit = _number(slo.actual), _number(slo.threshold)
            failure = ET.SubElement(
                case, "failure", type="SloFailed", message=f"observed {observed}, limit {limit}"
            )
            failure.text = f"{slo.name}: observed {observed}, limit {limit}"

    case = ET.SubElement(suite, "testcase", classname=name, name="run verdict", time=duration)
    if result.verdict is Verdict.FAILED or (result.verdict is Verdict.ABORTED and result.abort_criterion):
        failures += 1
        ET.SubElement(case, "failure", type=verdict, message=reason).text = reason
    elif result.verdict is not Verdict.PASSED:
        errors += 1
        ET.SubElement(case, "error", type=verdict, message=reason).text = reason
    out = ET.SubElement(case, "system-out")
    out.text = f"verdict: {verdict}\nreason: {reason}\nreport: {result.report.path or '-'}\n"

    tests = len(result.slos) + 1
    for element in (suites, suite):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", str(errors))
    suite.set("skipped", "0")
    suites.set("time", duration)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def verdict_record(
    result: RunResult,
    *,
    schedule: str,
    exit_code: int,
    started: datetime,
    ended: datetime,
    missed: list[str],
    junit_path: str | None,
) -> dict[str, Any]:
    """The content of verdict.json (and of the webhook's POST body)."""
    return {
        "schedule": schedule,
        "run_id": result.run_id,
        "profile": result.profile,
        "verdict": result.verdict.value,
        "exit_code": exit_code,
        "reason": result.reason,
        "slos": [slo.to_dict() for slo in result.slos],
        "report": result.report.path,
        "run_dir": result.run_dir,
        "junit": junit_path,
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "duration_s": round((ended - started).total_seconds(), 3),
        "missed": missed,
    }
