"""Parsing and merging of Gatling 3.11.5 simulation.log files (loadorch.analysis.simlog).

The reference everywhere is a deliberately naive re-implementation in this
file: split every line on tabs as Gatling's reader does, keep every sample in
a list, sort it and pick the nearest rank.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from loadorch.analysis import InjectorLog, LogAccumulator, MergedStats, analyze_logs, merge
from loadorch.errors import InjectorError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gatling-3.11.5"
META = json.loads((FIXTURES / "fixture.json").read_text())
START = int(META["start_at_ms"])
QS = (0, 1, 25, 50, 75, 90, 95, 99, 99.9, 100)


def fixture_logs() -> list[InjectorLog]:
    return [
        InjectorLog(injector, info["region"], FIXTURES / injector / "simulation.log")
        for injector, info in sorted(META["injectors"].items())
    ]


# -- the naive reference ------------------------------------------------------


@dataclass
class Naive:
    """Everything recounted the slow, obvious way."""

    lines: int = 0
    malformed: int = 0
    # (injector, region, request name, status, start, response time)
    requests: list[tuple[str, str, str, str, int, int]] = field(default_factory=list)
    user_starts: list[tuple[str, int]] = field(default_factory=list)  # (region, timestamp)
    users_ended: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    run_start: dict[str, int] = field(default_factory=dict)


def naive_parse(logs: list[InjectorLog], naive: Naive | None = None) -> Naive:
    naive = naive or Naive()
    for log in logs:
        text = log.path.read_bytes().decode("utf-8")
        *complete, partial = text.split("\n")
        if partial:
            naive.lines += 1
            naive.malformed += 1
        for line in complete:
            naive.lines += 1
            try:
                parse_line(log, line, naive)
            except ValueError:  # unknown header, too few fields, a number that is not one
                naive.malformed += 1
    return naive


def parse_line(log: InjectorLog, line: str, naive: Naive) -> None:
    fields = line.split("\t")
    while fields and fields[-1] == "":
        fields.pop()
    kind = fields[0] if fields else ""
    if kind == "REQUEST" and len(fields) >= 7 and fields[5] in ("OK", "KO"):
        groups, name, start, end, status = fields[1], fields[2], int(fields[3]), int(fields[4]), fields[5]
        if groups:
            name = " / ".join([*groups.split(","), name])
        naive.requests.append((log.injector_id, log.region, name, status, start, end - start))
        if status == "KO":
            naive.errors[fields[6]] += 1
    elif kind == "USER" and len(fields) >= 4 and fields[2] in ("START", "END"):
        stamp = int(fields[3])
        if fields[2] == "START":
            naive.user_starts.append((log.region, stamp))
        else:
            naive.users_ended += 1
    elif kind == "RUN" and len(fields) >= 6:
        naive.run_start.setdefault(log.injector_id, int(fields[3]))
    elif kind == "ERROR" and len(fields) >= 3:
        int(fields[2])
        naive.errors[fields[1]] += 1
    elif kind == "GROUP" and len(fields) >= 6:
        [int(f) for f in fields[2:5]]
    elif kind != "ASSERTION" or len(fields) < 2:
        raise ValueError(line)


def nearest_rank(values: list[int], q: float) -> int | None:
    """Brute force: sort, take the ceil(q/100*N)-th value (at least the first)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered) / 100))
    return ordered[rank - 1]


def gatling_mean_std(values: list[int]) -> tuple[int, int]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(max(0.0, sum(v * v for v in values) / n - mean**2))
    return math.floor(mean + 0.5), math.floor(std + 0.5)


def check_scope(latency: Any, samples: list[tuple[str, int]]) -> None:
    """`latency` (a Latency) must describe `samples` [(status, rt)] exactly."""
    for status in ("all", "ok", "ko"):
        values = [rt for st, rt in samples if status == "all" or st == status.upper()]
        stats = getattr(latency, status)
        assert stats.count == len(values), status
        for q in QS:
            assert latency.percentile(q, status) == nearest_rank(values, q), (status, q)
        if values:
            assert (stats.min, stats.max) == (min(values), max(values))
            assert (stats.mean, stats.std_dev) == gatling_mean_std(values)
            assert (stats.p50, stats.p75, stats.p95, stats.p99) == tuple(
                nearest_rank(values, q) for q in (50, 75, 95, 99)
            )
        else:
            assert stats.min is stats.max is stats.mean is stats.p95 is None


def assert_sorted_keys(value: Any) -> None:
    if isinstance(value, dict):
        assert list(value) == sorted(value)
        for item in value.values():
            assert_sorted_keys(item)
    elif isinstance(value, list):
        for item in value:
            assert_sorted_keys(item)


# -- the fixtures from real Gatling ----------------------------------------------


@pytest.fixture(scope="module")
def merged() -> MergedStats:
    return analyze_logs(fixture_logs(), START, workers=1)


@pytest.fixture(scope="module")
def naive() -> Naive:
    return naive_parse(fixture_logs())


def test_fixture_logs_are_real_mixed_and_small() -> None:
    logs = fixture_logs()
    assert len(logs) == 2
    assert sum(log.path.stat().st_size for log in logs) < 200_000
    texts = [log.path.read_text() for log in logs]
    for text in texts:
        runs = [line.split("\t") for line in text.splitlines() if line.startswith("RUN\t")]
        assert len(runs) == 1 and runs[0][5] == "3.11.5"  # written by Gatling 3.11.5 itself
    statuses = Counter(
        line.split("\t")[5] for t in texts for line in t.splitlines() if line[:8] == "REQUEST\t"
    )
    assert statuses["OK"] > 0 and statuses["KO"] > 0


def test_counts_equal_a_naive_recount(merged: MergedStats, naive: Naive) -> None:
    assert merged.files_read == 2
    assert merged.lines_read == naive.lines
    assert merged.malformed_lines == naive.malformed == 0
    assert merged.requests == len(naive.requests)
    assert merged.requests_ok == sum(1 for r in naive.requests if r[3] == "OK")
    assert merged.requests_ko == sum(1 for r in naive.requests if r[3] == "KO")
    assert merged.requests_ok + merged.requests_ko == merged.requests
    assert merged.users_started == len(naive.user_starts)
    assert merged.users_ended == naive.users_ended
    assert [(e.message, e.count) for e in merged.errors] == sorted(
        naive.errors.items(), key=lambda item: (-item[1], item[0])
    )


def test_latency_equals_brute_force_everywhere(merged: MergedStats, naive: Naive) -> None:
    check_scope(merged.latency, [(r[3], r[5]) for r in naive.requests])
    names = {r[2] for r in naive.requests}
    assert set(merged.by_request) == names == {"read_feed", "read_post", "like_post", "create_post"}
    for name in names:
        check_scope(merged.by_request[name], [(r[3], r[5]) for r in naive.requests if r[2] == name])
    assert set(merged.by_region) == {"eu", "us"}
    for region in merged.by_region:
        check_scope(merged.by_region[region], [(r[3], r[5]) for r in naive.requests if r[1] == region])
    assert set(merged.by_injector) == {"eu-1", "us-1"}
    for injector in merged.by_injector:
        check_scope(merged.by_injector[injector], [(r[3], r[5]) for r in naive.requests if r[0] == injector])
    # the convenience accessor picks the same scopes
    eu = [r[5] for r in naive.requests if r[1] == "eu"]
    assert merged.percentile(99.9, region="eu") == nearest_rank(eu, 99.9)
    read_post_ko = [r[5] for r in naive.requests if r[2] == "read_post" and r[3] == "KO"]
    assert merged.percentile(50, "ko", request="read_post") == nearest_rank(read_post_ko, 50)
    assert merged.percentile(50, request="no_such_request") is None


def test_per_second_bins_equal_a_naive_recount(merged: MergedStats, naive: Naive) -> None:
    def second(t: int) -> int:
        return max(0, (t - START) // 1000)

    users: Counter[tuple[str, int]] = Counter((region, second(t)) for region, t in naive.user_starts)
    requests: Counter[tuple[str, int]] = Counter((r[1], second(r[4])) for r in naive.requests)
    kos: Counter[tuple[str, int]] = Counter((r[1], second(r[4])) for r in naive.requests if r[3] == "KO")
    latencies: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in naive.requests:
        latencies[r[1], second(r[4])].append(r[5])
    last = max(s for _, s in [*users, *requests])
    assert [row.second for row in merged.per_second] == list(range(last + 1))
    for row in merged.per_second:
        for region in ("eu", "us"):
            cell = row.regions[region]
            key = (region, row.second)
            assert (cell.users_started, cell.requests, cell.ko) == (users[key], requests[key], kos[key])
            assert cell.p95 == nearest_rank(latencies.get(key, []), 95)
        assert row.users_started == sum(users[r, row.second] for r in ("eu", "us"))
        assert row.requests == sum(requests[r, row.second] for r in ("eu", "us"))
        assert row.ko == sum(kos[r, row.second] for r in ("eu", "us"))
    assert sum(row.requests for row in merged.per_second) == merged.requests
    assert sum(row.users_started for row in merged.per_second) == merged.users_started
    assert merged.early_users == merged.early_requests == 0  # every injector waited for the start


def test_events_before_the_start_go_to_second_zero_and_are_counted_early(naive: Naive) -> None:
    late_start = START + 2500
    stats = analyze_logs(fixture_logs(), late_start, workers=1)
    early_users = sum(1 for _, t in naive.user_starts if t < late_start)
    early_requests = sum(1 for r in naive.requests if r[4] < late_start)
    assert early_users > 0 and early_requests > 0
    assert stats.early_users == early_users
    assert stats.early_requests == early_requests
    first = stats.per_second[0]
    assert first.users_started == sum(1 for _, t in naive.user_starts if t < late_start + 1000)
    assert first.requests == sum(1 for r in naive.requests if r[4] < late_start + 1000)
    assert sum(row.requests for row in stats.per_second) == stats.requests


def test_injector_summaries(merged: MergedStats, naive: Naive) -> None:
    assert [s.injector_id for s in merged.injectors] == ["eu-1", "us-1"]
    for summary in merged.injectors:
        mine = [r for r in naive.requests if r[0] == summary.injector_id]
        assert summary.region == META["injectors"][summary.injector_id]["region"]
        assert summary.run_start_ms == naive.run_start[summary.injector_id]
        assert summary.run_start_ms is not None and summary.run_start_ms >= START
        assert summary.first_request_start_ms == min(r[4] for r in mine)
        assert summary.start_skew_ms == summary.first_request_start_ms - START
        assert summary.last_request_end_ms == max(r[4] + r[5] for r in mine)
        assert summary.requests == len(mine)
        assert summary.requests_ko == sum(1 for r in mine if r[3] == "KO")
        assert summary.users_started == sum(1 for region, _ in naive.user_starts if region == summary.region)
        assert summary.malformed_lines == 0
        assert summary.bytes_read == (FIXTURES / summary.injector_id / "simulation.log").stat().st_size


def test_merge_of_two_accumulators_equals_analysis_of_the_concatenation() -> None:
    logs = fixture_logs()
    separate = []
    for log in logs:
        acc = LogAccumulator(log.injector_id, log.region, START)
        acc.feed(log.path.read_bytes())
        acc.finish()
        separate.append(acc)
    together = LogAccumulator("both", "both", START)
    together.feed(b"".join(log.path.read_bytes() for log in logs))
    together.finish()
    a, b = merge(separate), merge([together])
    assert a.latency.ok_hist == b.latency.ok_hist
    assert a.latency.ko_hist == b.latency.ko_hist
    assert {k: (v.ok_hist, v.ko_hist) for k, v in a.by_request.items()} == {
        k: (v.ok_hist, v.ko_hist) for k, v in b.by_request.items()
    }
    assert a.latency.to_dict() == b.latency.to_dict()
    assert a.errors == b.errors
    for name in (
        "requests",
        "requests_ok",
        "requests_ko",
        "users_started",
        "users_ended",
        "lines_read",
        "malformed_lines",
        "early_users",
        "early_requests",
    ):
        assert getattr(a, name) == getattr(b, name), name
    assert [(s.second, s.users_started, s.requests, s.ko) for s in a.per_second] == [
        (s.second, s.users_started, s.requests, s.ko) for s in b.per_second
    ]
    # the region histograms of the separate analysis add up to the single one
    merged_regions: Counter[int] = Counter()
    for latency in a.by_region.values():
        merged_regions.update(latency.all_hist)
    assert merged_regions == b.by_region["both"].all_hist


def test_worker_processes_give_the_same_result() -> None:
    one = analyze_logs(fixture_logs(), START, workers=1)
    two = analyze_logs(fixture_logs(), START, workers=2)
    default = analyze_logs(fixture_logs(), START)
    assert one.to_dict() == two.to_dict() == default.to_dict()
    assert one.latency.all_hist == two.latency.all_hist


def test_to_dict_is_json_with_sorted_keys(merged: MergedStats) -> None:
    data = merged.to_dict()
    assert_sorted_keys(data)
    text = json.dumps(data)
    assert json.loads(text) == data
    assert json.dumps(data, sort_keys=True) == json.dumps(data)
    assert data["latency"]["all"]["count"] == merged.requests
    assert data["injectors"][0]["start_skew_ms"] == merged.injectors[0].start_skew_ms


# -- streaming: chunks, partial lines, malformed lines ----------------------------


def fed_in_chunks(data: bytes, sizes: list[int] | None, *, finish: bool = True) -> LogAccumulator:
    acc = LogAccumulator("eu-1", "eu", START)
    if sizes is None:
        acc.feed(data)
    else:
        pos, i = 0, 0
        while pos < len(data):
            size = sizes[i % len(sizes)]
            acc.feed(data[pos : pos + size])
            pos += size
            i += 1
    if finish:
        acc.finish()
    return acc


def test_any_chunking_gives_the_same_result() -> None:
    data = (FIXTURES / "eu-1" / "simulation.log").read_bytes()
    whole = merge([fed_in_chunks(data, None)]).to_dict()
    rng = random.Random(7)
    for sizes in ([1], [7], [4096], [rng.randint(1, 300) for _ in range(50)]):
        assert merge([fed_in_chunks(data, sizes)]).to_dict() == whole


def test_a_partial_last_line_waits_for_its_end() -> None:
    line = b"REQUEST\t\tread_feed\t1795684705113\t1795684705140\tOK\t \n"
    acc = LogAccumulator("eu-1", "eu", START)
    acc.feed(line + line[:30])
    assert sum(acc.requests.values()) == 1
    assert acc.pending_bytes == 30
    assert acc.lines_read == 1
    acc.feed(line[30:-1])  # still no newline
    assert sum(acc.requests.values()) == 1
    assert merge([acc]).requests == 1  # a live view never sees half a record
    acc.feed(b"\n")
    assert sum(acc.requests.values()) == 2
    assert acc.pending_bytes == 0
    acc.finish()
    assert (acc.lines_read, acc.malformed_lines) == (2, 0)


def test_finish_counts_an_unfinished_last_line_as_malformed() -> None:
    line = b"REQUEST\t\tread_feed\t1795684705113\t1795684705140\tOK\t \n"
    acc = LogAccumulator("eu-1", "eu", START)
    acc.feed(line + line[:-1])  # the last record lacks only its newline
    acc.finish()
    assert sum(acc.requests.values()) == 1
    assert (acc.lines_read, acc.malformed_lines) == (2, 1)
    with pytest.raises(ValueError, match="already finished"):
        acc.feed(line)


MIXED = [
    (b"ASSERTION\tAAECAAMBAAAAAAAAAPA/", True),
    (b"RUN\tspike.SpikeSimulation\tspikesimulation\t1000\t \t3.11.5", True),
    (b"USER\tsocial\tSTART\t1500", True),
    (b"REQUEST\t\tget\t1500\t1510\tOK\t ", True),
    (b"REQUEST\t\tget\t1600\t1700\tKO\tboom", True),
    (b"REQUEST\tg1,g2\tget\t1600\t1650\tKO\tboom\textra field", True),
    (b"GROUP\tg1,g2\t1500\t1700\t150\tOK", True),
    (b"ERROR\tcrash in session\t1750", True),
    (b"USER\tsocial\tEND\t1800", True),
    (b"REQUEST\t\tws in\t1500\t-9223372036854775808\tOK\t ", True),  # unmatched incoming event
    (b"", False),
    (b"garbage", False),
    (b"request\t\tget\t1500\t1510\tOK\t ", False),
    (b"REQUEST\t\tget\tabc\t1510\tOK\t ", False),
    (b"REQUEST\t\tget\t1500\t1510\tMAYBE\t ", False),
    (b"REQUEST\t\tget\t1500\t1510\tOK", False),
    (b"REQUEST\t\tget\t1500\t1510\tKO\t", False),  # Gatling's reader drops it too (6 fields)
    (b"REQUEST\tget\t1500\t1510\tOK\t ", False),
    (b"USER\tsocial\tSTART", False),
    (b"USER\tsocial\tPAUSE\t1500", False),
    (b"USER\tsocial\tSTART\t15x0", False),
    (b"RUN\tsim\tid\tsoon\t \t3.11.5", False),
    (b"GROUP\tg1\t1500\t1700\t150", False),
    (b"ERROR\tonly a message", False),
    (b"\tREQUEST\t\tget\t1500\t1510\tOK\t ", False),
]


def test_malformed_lines_are_counted_not_fatal() -> None:
    data = b"".join(line + b"\n" for line, _ in MIXED)
    for sizes in (None, [1], [5, 11]):
        acc = fed_in_chunks(data, sizes)
        assert acc.lines_read == len(MIXED)
        assert acc.malformed_lines == sum(1 for _, ok in MIXED if not ok)
        assert (acc.run_records, acc.assertion_records, acc.group_records, acc.error_records) == (1, 1, 1, 1)
        assert acc.incoming_records == 1
        assert acc.run_start_ms == 1000
        stats = merge([acc])
        assert (stats.requests, stats.requests_ok, stats.requests_ko) == (3, 1, 2)
        assert (stats.users_started, stats.users_ended) == (1, 1)
        assert [(e.message, e.count) for e in stats.errors] == [("boom", 2), ("crash in session", 1)]
        assert set(stats.by_request) == {"get", "g1 / g2 / get"}
        assert stats.by_request["g1 / g2 / get"].ko.max == 50
        assert stats.latency.all_hist == {10: 1, 100: 1, 50: 1}
        assert stats.malformed_lines == acc.malformed_lines
        assert stats.error_records == stats.group_records == 1


def test_naive_reference_agrees_on_the_mixed_lines(tmp_path: Path) -> None:
    path = tmp_path / "simulation.log"
    path.write_bytes(b"".join(line + b"\n" for line, _ in MIXED if b"-9223372036854775808" not in line))
    log = InjectorLog("x-1", "x", path)
    naive = naive_parse([log])
    stats = analyze_logs([log], 0)
    assert stats.lines_read == naive.lines
    assert stats.malformed_lines == naive.malformed
    assert stats.requests == len(naive.requests)
    assert dict(Counter({e.message: e.count for e in stats.errors})) == dict(naive.errors)


def test_a_missing_log_is_an_injector_error(tmp_path: Path) -> None:
    log = InjectorLog("ap-1", "ap", tmp_path / "nowhere" / "simulation.log")
    with pytest.raises(InjectorError) as caught:
        analyze_logs([log], START)
    assert caught.value.where == "ap-1"
    assert "does not exist" in caught.value.message


def test_merge_refuses_accumulators_with_different_starts() -> None:
    with pytest.raises(ValueError, match="shared start"):
        merge([LogAccumulator("a", "eu", 1), LogAccumulator("b", "us", 2)])


def test_merge_of_nothing_is_empty() -> None:
    stats = merge([])
    assert stats.requests == stats.files_read == 0
    assert stats.per_second == ()
    assert stats.latency.all.count == 0 and stats.latency.all.p95 is None
    json.dumps(stats.to_dict())
