"""What a scheduled run leaves behind (pure): JUnit XML and the verdict record.

The input is a run's `summary.json` (see `loadorch.verdict.judge`): `profile`,
`run_id`, `verdict`, `reason`, `exit_code`, `start_at_ms`, `duration_s`, `report`
and `slos` (each `name`, `threshold`, `actual`, `passed`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

# verdicts that mean the run itself did not produce a trustworthy judgement
ERROR_VERDICTS = ("degraded", "no-data", "interrupted", "error")


def _timestamp(summary: dict[str, Any]) -> str:
    start_ms = summary.get("start_at_ms")
    moment = datetime.fromtimestamp(start_ms / 1000, UTC) if start_ms else datetime.now(UTC)
    # JUnit's schema wants local ISO 8601 without a zone; spike's is UTC
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def _number(value: Any) -> str:
    if value is None:
        return "no data"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    return str(int(value)) if isinstance(value, int | float) else str(value)


def junit_xml(summary: dict[str, Any], *, suite_name: str | None = None) -> str:
    """JUnit XML for one run: a testcase per SLO and one for the run verdict.

    A failed SLO is a <failure> with observed vs limit; the verdict case is a
    <failure> when SLOs failed and an <error> when the run was degraded, had no
    data or was interrupted (the SLOs could not be trusted).
    """
    profile = summary.get("profile") or "run"
    name = suite_name or f"spike.{profile}"
    duration = f"{float(summary.get('duration_s') or 0):.3f}"
    verdict = str(summary.get("verdict") or "error")
    reason = str(summary.get("reason") or "")
    slos = summary.get("slos") or []

    suites = ET.Element("testsuites", name="spike")
    suite = ET.SubElement(suites, "testsuite", name=name, timestamp=_timestamp(summary), time=duration)
    properties = ET.SubElement(suite, "properties")
    for key in ("run_id", "profile", "provider", "target", "report", "run_dir", "verdict", "exit_code"):
        if summary.get(key) is not None:
            ET.SubElement(properties, "property", name=key, value=str(summary[key]))

    failures = errors = 0
    for slo in slos:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.slo", name=str(slo["name"]), time=duration)
        if not slo.get("passed"):
            failures += 1
            observed, limit = _number(slo.get("actual")), _number(slo.get("threshold"))
            failure = ET.SubElement(
                case, "failure", type="SloFailed", message=f"observed {observed}, limit {limit}"
            )
            failure.text = f"{slo['name']}: observed {observed}, limit {limit}"

    case = ET.SubElement(suite, "testcase", classname=name, name="run verdict", time=duration)
    if verdict == "failed":
        failures += 1
        ET.SubElement(case, "failure", type="failed", message=reason).text = reason
    elif verdict in ERROR_VERDICTS or verdict != "passed":
        errors += 1
        ET.SubElement(case, "error", type=verdict, message=reason).text = reason
    out = ET.SubElement(case, "system-out")
    out.text = f"verdict: {verdict}\nreason: {reason}\nreport: {summary.get('report') or '-'}\n"

    tests = len(slos) + 1
    for element in (suites, suite):
        element.set("tests", str(tests))
        element.set("failures", str(failures))
        element.set("errors", str(errors))
    suite.set("skipped", "0")
    suites.set("time", duration)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def verdict_record(
    summary: dict[str, Any],
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
        "run_id": summary.get("run_id"),
        "profile": summary.get("profile"),
        "verdict": summary.get("verdict") or "error",
        "exit_code": exit_code,
        "reason": summary.get("reason") or "",
        "slos": summary.get("slos") or [],
        "report": summary.get("report"),
        "run_dir": summary.get("run_dir"),
        "junit": junit_path,
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "duration_s": round((ended - started).total_seconds(), 3),
        "missed": missed,
    }
