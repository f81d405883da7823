"""A real Gatling 3.11.5 injector streaming its Graphite metrics to a real agent.

The claim under test: the per-second `count`s the agent writes add up, over the run, to exactly
the number of REQUEST records in the same injector's simulation.log (per status and per request).
That holds because Gatling resets its counters at every flush and flushes once more when the run
stops, and because the agent keeps two flushes of the same second as two points.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from loadorch.agent.agent import AgentSettings, AgentThread
from loadorch.agent.graphite import gatling_graphite_properties
from loadorch.curve import RateCurve
from loadorch.engine.gatling.build import compile_simulation
from loadorch.engine.gatling.command import injector_command
from loadorch.engine.gatling.render import render_simulation
from loadorch.paths import build_cache_dir
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import load_profile
from loadorch.target.server import TargetServer

RATE_PER_S = 20
DURATION_S = 12


class MemorySink:
    """Stores points the way InfluxDB does: one point per (series, timestamp), later fields win."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stored: dict[tuple[str, int], dict[str, str]] = {}
        self._lock = threading.Lock()

    def write(self, lines: Sequence[str]) -> None:
        with self._lock:
            self.lines.extend(lines)
            for text in lines:
                series, field_text, ts = text.split(" ")
                fields = dict(pair.split("=", 1) for pair in field_text.split(","))
                self.stored.setdefault((series, int(ts)), {}).update(fields)

    def points(self) -> list[tuple[str, dict[str, str], dict[str, float], int]]:
        """What a query would return: (measurement, tags, fields, timestamp ms)."""
        out = []
        for (series, ts), fields in sorted(self.stored.items(), key=lambda item: item[0][1]):
            measurement, *tag_pairs = series.split(",")  # spike's tags hold no escaped characters here
            tags = dict(pair.split("=", 1) for pair in tag_pairs)
            out.append((measurement, tags, {k: float(v) for k, v in fields.items()}, ts))
        return out

    def check(self) -> str:
        return "memory"

    def close(self) -> None:
        pass


def simulation_log_requests(results: Path) -> Counter[tuple[str, str]]:
    """(request name, OK|KO) -> number of REQUEST records in the run's simulation.log."""
    logs = list(results.glob("*/simulation.log"))
    assert len(logs) == 1, logs
    counts: Counter[tuple[str, str]] = Counter()
    for row in logs[0].read_text().splitlines():
        if row.startswith("REQUEST\t"):
            parts = row.split("\t")
            counts[(parts[2], parts[5])] += 1
    return counts


def test_graphite_counts_add_up_to_the_simulation_log_exactly(tmp_path: Path, target: TargetServer) -> None:
    loaded = load_profile("smoke")
    profile = loaded.profile
    compiled = compile_simulation(render_simulation(profile), build_cache_dir())
    plan = plan_run(profile, PlanOptions(now_ms=int(time.time() * 1000), target=target.url))
    # the smoke scenario, at a steadier and shorter shape than smoke's own: 20 users/s for 12 s
    injector = dataclasses.replace(
        plan.injectors[0], curve=RateCurve.from_points([(0, RATE_PER_S), (DURATION_S, RATE_PER_S)])
    )

    sink = MemorySink()
    agent = AgentThread(
        AgentSettings(
            run_id=plan.run_id,
            region=injector.region,
            injector=injector.id,
            spool_dir=tmp_path / "spool",
            health_interval_s=1.0,
        ),
        sink,
    )
    port = agent.start()  # before Gatling: its sender gives up after 5 failed connects in 5 s
    try:
        command = injector_command(
            compiled,
            plan,
            injector,
            results_dir=tmp_path / "results",
            feeders={f.name: f.file for f in profile.scenario.feeders},
            extra_properties=gatling_graphite_properties(port),
        )
        with (tmp_path / "console.log").open("w") as console:
            result = subprocess.run(command.argv, stdout=console, stderr=subprocess.STDOUT, timeout=180)
        console_text = (tmp_path / "console.log").read_text()
        assert result.returncode in (0, 2), console_text[-3000:]  # 2: Gatling's own assertions failed
        stats = agent.drain(10)
    finally:
        final = agent.stop()

    log_counts = simulation_log_requests(tmp_path / "results")
    assert sum(log_counts.values()) >= RATE_PER_S * DURATION_S * 0.9, log_counts

    points = sink.points()
    gatling = [p for p in points if p[0] == "gatling"]
    assert gatling, stats
    for _, tags, _, _ in points:
        assert tags["run_id"] == plan.run_id and tags["injector"] == injector.id
        assert tags["region"] == injector.region

    # one point per write period: at least one per second of load, each series strictly increasing
    by_series: dict[tuple[str, str], list[int]] = defaultdict(list)
    graphite_counts: Counter[tuple[str, str]] = Counter()
    for _, tags, fields, ts in gatling:
        by_series[(tags["request"], tags["status"])].append(ts)
        if tags["status"] in ("ok", "ko"):
            graphite_counts[(tags["request"], tags["status"].upper())] += int(fields["count"])
    all_ok = by_series[("allRequests", "ok")]
    assert len(all_ok) >= DURATION_S, all_ok
    for timestamps in by_series.values():
        assert timestamps == sorted(set(timestamps))

    # THE check: the live counts add up to the exact log, per request and status, and in total
    expected = {key: n for key, n in log_counts.items()}
    expected_all = Counter[tuple[str, str]]()
    for (_, status), n in log_counts.items():
        expected_all[("allRequests", status)] += n
    live_per_request = {k: v for k, v in graphite_counts.items() if k[0] != "allRequests" and v}
    live_all = {k: v for k, v in graphite_counts.items() if k[0] == "allRequests" and v}
    assert live_per_request == expected
    assert live_all == dict(expected_all)
    assert sum(live_all.values()) == sum(log_counts.values())

    # users and health arrived as well; nothing was lost or unparseable
    assert any(p[0] == "gatling_users" and p[1]["scenario"] == "allUsers" for p in points)
    assert any(p[0] == "injector_health" for p in points)
    assert stats["malformed_lines"] == 0 and stats["dropped"] == 0
    assert stats["points_written"] == len(sink.lines) == final["points_written"]
    assert len(sink.stored) == len(sink.lines)  # no point overwrote another in "InfluxDB"
