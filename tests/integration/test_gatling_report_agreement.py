"""spike's merged statistics against Gatling 3.11.5's own report over the same logs.

Gatling's reports-only mode reads every ``*.log`` in one folder and writes
``js/stats.json``. Counts, min, max, mean and standard deviation must agree
exactly. Gatling's percentiles come from a t-digest (approximate,
randomized), spike's are exact nearest-rank, so each Gatling percentile must
only lie in the exact distribution's band around q: from the nearest-rank
sample at q-1 to the one at q+1, widened by one neighbouring sample on each
side, because the t-digest interpolates linearly between adjacent centroids
(single samples, when there are few) and so can land between the
nearest-rank sample and its neighbour (e.g. 113 between samples 111 and 114).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from report_compare import PERCENTILE_FIELDS, STATUSES, compare, gatling_requests, sorted_samples

from loadorch.analysis import InjectorLog, Latency, MergedStats, analyze_logs
from loadorch.engine.gatling.command import reports_only_command

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "gatling-3.11.5"
CLASSPATH_FILE = REPO / "gatling" / "classpath.txt"

pytestmark = pytest.mark.integration


def gatling_classpath() -> str:
    """The Gatling 3.11.5 classpath; built with Maven when the repo has none yet."""
    if not CLASSPATH_FILE.is_file():
        mvn = shutil.which("mvn")
        if mvn is None:
            pytest.fail("mvn is not on PATH: it is needed to build gatling/target/classpath.txt (make deps)")
        build = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(REPO / "gatling" / "pom.xml"),
                "test-compile",
                "dependency:build-classpath",
            ],
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
        assert build.returncode == 0, f"maven failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    classpath = CLASSPATH_FILE.read_text().strip()
    assert "gatling-charts" in classpath, f"{CLASSPATH_FILE} does not name Gatling's charts module"
    return classpath


def fixture_logs() -> tuple[list[InjectorLog], int]:
    meta = json.loads((FIXTURES / "fixture.json").read_text())
    logs = [
        InjectorLog(injector, info["region"], FIXTURES / injector / "simulation.log")
        for injector, info in sorted(meta["injectors"].items())
    ]
    return logs, int(meta["start_at_ms"])


@pytest.fixture(scope="module")
def gatling_stats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("java") is None:
        pytest.fail("java is not on PATH: Gatling's reports-only mode needs it (make deps)")
    classpath = gatling_classpath()
    results = tmp_path_factory.mktemp("results")
    folder = results / "merged"
    folder.mkdir()
    logs, _ = fixture_logs()
    for log in logs:
        shutil.copyfile(log.path, folder / f"{log.injector_id}.log")
    command = reports_only_command(classpath, results, "merged", heap_mb=512)
    done = subprocess.run(command.argv, capture_output=True, text=True, timeout=300, check=False)
    # 2 = the simulation's assertions failed (the fixtures have KOs): the report is still written
    assert done.returncode in (0, 2), (
        f"gatling exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr}"
    )
    stats_file = folder / "js" / "stats.json"
    assert stats_file.is_file(), f"no {stats_file}; gatling said:\n{done.stdout[-3000:]}"
    return json.loads(stats_file.read_text())


@pytest.fixture(scope="module")
def spike_stats() -> MergedStats:
    logs, start_at_ms = fixture_logs()
    return analyze_logs(logs, start_at_ms)


def test_global_statistics_agree(gatling_stats: dict[str, Any], spike_stats: MergedStats) -> None:
    assert gatling_stats["stats"]["numberOfRequests"]["total"] == spike_stats.requests > 400
    assert spike_stats.requests_ko > 0, "the fixtures must hold KO requests for the ko column to be tested"
    problems = compare("global", gatling_stats["stats"], spike_stats.latency)
    assert not problems, "\n".join(problems)


def test_per_request_statistics_agree(gatling_stats: dict[str, Any], spike_stats: MergedStats) -> None:
    theirs = gatling_requests(gatling_stats)
    assert set(theirs) == set(spike_stats.by_request)
    problems = []
    for name, block in sorted(theirs.items()):
        problems += compare(name, block, spike_stats.by_request[name])
    assert not problems, "\n".join(problems)


def exact_block(latency: Latency) -> dict[str, Any]:
    """A stats.json block holding spike's own exact numbers."""
    block: dict[str, Any] = {}
    for g_status, status in STATUSES.items():
        mine = getattr(latency, status)
        values = {
            "numberOfRequests": mine.count,
            "minResponseTime": mine.min,
            "maxResponseTime": mine.max,
            "meanResponseTime": mine.mean,
            "standardDeviation": mine.std_dev,
            **{name: latency.percentile(q, status) for name, q in PERCENTILE_FIELDS.items()},
        }
        for name, value in values.items():
            block.setdefault(name, {})[g_status] = 0 if value is None else value
    return block


def test_the_comparison_can_fail(spike_stats: MergedStats) -> None:
    """Exact numbers pass; a p50 that is really the p90, or a max off by one, is caught."""
    latency = spike_stats.latency
    block = exact_block(latency)
    assert compare("exact", block, latency) == []
    samples = sorted_samples(latency, "all")
    block["percentiles1"]["total"] = samples[len(samples) * 9 // 10]
    block["maxResponseTime"]["ko"] += 1
    problems = compare("fake", block, latency)
    assert len(problems) == 2, problems
    assert "all: p50 gatling" in problems[0]
    assert "ko: maxResponseTime" in problems[1]
