"""Gatling Graphite lines -> spike points: parsing, grouping, sanitized names, bad input."""

from __future__ import annotations

import pytest

from loadorch.agent.graphite import (
    MAX_LINE_BYTES,
    GraphiteDecoder,
    GraphiteLineError,
    TimestampSequencer,
    parse_line,
    sanitize_name,
)
from loadorch.metrics.schema import GATLING, GATLING_USERS, line

TAGS = {"run_id": "r-1", "region": "eu-west-2", "injector": "eu-west-2-1"}

# Captured from a real Gatling 3.11.5 run (graphite writer, rootPathPrefix=spike) of a simulation
# with scenario "my scn.1 x\y", request "read feed.v2\z" inside group "grp.one two", and a
# request "missing" that always fails: one flush, abridged.
REAL_FLUSH = """\
spike.spikesimulation.users.allUsers.active 20 1795689026
spike.spikesimulation.users.allUsers.waiting 20 1795689026
spike.spikesimulation.users.allUsers.done 20 1795689026
spike.spikesimulation.users.my_scn-1_x-y.active 20 1795689026
spike.spikesimulation.users.my_scn-1_x-y.waiting 20 1795689026
spike.spikesimulation.users.my_scn-1_x-y.done 20 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.count 20 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.min 3 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.max 17 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.mean 4 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.stdDev 3 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.percentiles50 4 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.percentiles75 5 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.percentiles95 9 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ok.percentiles99 17 1795689026
spike.spikesimulation.grp-one_two.read_feed-v2-z.ko.count 0 1795689026
spike.spikesimulation.missing.ok.count 0 1795689026
spike.spikesimulation.allRequests.ok.count 40 1795689026
spike.spikesimulation.allRequests.ok.min 1 1795689026
spike.spikesimulation.allRequests.ok.max 17 1795689026
spike.spikesimulation.allRequests.ok.mean 3 1795689026
spike.spikesimulation.allRequests.ok.stdDev 2 1795689026
spike.spikesimulation.allRequests.ok.percentiles50 3 1795689026
spike.spikesimulation.allRequests.ok.percentiles75 4 1795689026
spike.spikesimulation.allRequests.ok.percentiles95 7 1795689026
spike.spikesimulation.allRequests.ok.percentiles99 17 1795689026
"""
TS = 1795689026000


def gatling_tags(request: str, status: str) -> dict[str, str]:
    return {**TAGS, "simulation": "spikesimulation", "request": request, "status": status}


EXPECTED = [
    line(
        GATLING_USERS,
        {**TAGS, "simulation": "spikesimulation", "scenario": "allUsers"},
        {"active": 20, "waiting": 20, "done": 20},
        TS,
    ),
    line(
        GATLING_USERS,
        {**TAGS, "simulation": "spikesimulation", "scenario": "my_scn-1_x-y"},
        {"active": 20, "waiting": 20, "done": 20},
        TS,
    ),
    line(
        GATLING,
        gatling_tags("grp-one_two.read_feed-v2-z", "ok"),
        {"count": 20, "min": 3, "max": 17, "mean": 4, "stddev": 3, "p50": 4, "p75": 5, "p95": 9, "p99": 17},
        TS,
    ),
    line(GATLING, gatling_tags("grp-one_two.read_feed-v2-z", "ko"), {"count": 0}, TS),
    line(GATLING, gatling_tags("missing", "ok"), {"count": 0}, TS),
    line(
        GATLING,
        gatling_tags("allRequests", "ok"),
        {"count": 40, "min": 1, "max": 17, "mean": 3, "stddev": 2, "p50": 3, "p75": 4, "p95": 7, "p99": 17},
        TS,
    ),
]


def decode(data: bytes, decoder: GraphiteDecoder | None = None) -> list[str]:
    decoder = decoder or GraphiteDecoder(TAGS)
    return decoder.feed(data) + decoder.finish()


def test_one_real_flush_becomes_one_point_per_path_and_status_with_all_fields() -> None:
    decoder = GraphiteDecoder(TAGS)
    assert decode(REAL_FLUSH.encode(), decoder) == EXPECTED
    assert decoder.lines == 26
    assert decoder.malformed == 0


def test_points_are_emitted_as_soon_as_complete_without_waiting_for_more_data() -> None:
    # a live view must not lag a second behind: the last point of a flush is out before the next flush
    decoder = GraphiteDecoder(TAGS)
    assert decoder.feed(REAL_FLUSH.encode()) == EXPECTED
    assert not decoder.has_open_point


@pytest.mark.parametrize("step", [1, 7, 64, 1000])
def test_any_split_of_the_byte_stream_gives_the_same_points(step: int) -> None:
    data = REAL_FLUSH.encode()
    decoder = GraphiteDecoder(TAGS)
    out: list[str] = []
    for start in range(0, len(data), step):
        out += decoder.feed(data[start : start + step])
    assert out + decoder.finish() == EXPECTED


def test_parse_line_request_and_users_metrics() -> None:
    sample = parse_line("spike.sim.grp.req.ko.percentiles95 12 1700000000")
    assert sample == ("gatling", "sim", "grp.req", "ko", "p95", 12.0, 1700000000)
    users = parse_line("spike.sim.users.allUsers.waiting 3 1700000000")
    assert users == ("gatling_users", "sim", "allUsers", "", "waiting", 3.0, 1700000000)
    # a request that happens to be called "users" is still a request
    assert parse_line("spike.sim.users.ok.count 5 1700000000").name == "users"
    # a prefix with dots (Gatling does not sanitize rootPathPrefix)
    assert parse_line("a.b.sim.allRequests.all.stdDev 1 1700000000", prefix="a.b").field == "stddev"


def test_sanitize_name_mirrors_gatling() -> None:
    # the expected values are what real Gatling 3.11.5 sent (see REAL_FLUSH)
    assert sanitize_name("read feed.v2\\z") == "read_feed-v2-z"
    assert sanitize_name("grp.one two") == "grp-one_two"
    assert sanitize_name("my scn.1 x\\y") == "my_scn-1_x-y"
    assert sanitize_name("read_feed") == "read_feed"


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "spike.sim.allRequests.ok.count 1",
        "spike.sim.allRequests.ok.count 1 2 3",
        "other.sim.allRequests.ok.count 1 1700000000",
        "spike.sim.allRequests.ok.latency 1 1700000000",
        "spike.sim.allRequests.maybe.count 1 1700000000",
        "spike.sim.ok.count 1 1700000000",
        "spike.sim.users.x.y.active 1 1700000000",
        "spike.sim.allRequests.ok.count one 1700000000",
        "spike.sim.allRequests.ok.count nan 1700000000",
        "spike.sim.allRequests.ok.count 1 -5",
        "spike.sim.allRequests.ok.count 1 soon",
    ],
)
def test_malformed_lines_raise_in_parse_line_and_are_counted_by_the_decoder(text: str) -> None:
    with pytest.raises(GraphiteLineError):
        parse_line(text)
    decoder = GraphiteDecoder(TAGS)
    good = "spike.s.allRequests.ko.count 0 1700000000\n"
    out = decode(f"{good}{text}\n{good}".encode(), decoder)
    assert decoder.malformed == 1 and decoder.last_malformed
    assert len(out) == 2  # the good lines around it still count


def test_invalid_utf8_overlong_and_cut_off_lines_are_counted_not_raised() -> None:
    decoder = GraphiteDecoder(TAGS)
    good = b"spike.s.allRequests.ko.count 0 1700000000\n"
    out = decoder.feed(good + b"spike.s.\xff\xfe.ok.count 1 1700000000\n" + good)
    out += decoder.feed(b"x" * (MAX_LINE_BYTES + 1))  # no newline yet: must not buffer forever
    out += decoder.feed(b"\n" + good + b"spike.s.allRequests.ok.count 3")  # cut off by end of stream
    out += decoder.finish()
    assert len(out) == 3
    assert decoder.malformed == 3


def test_same_second_twice_keeps_both_points_one_millisecond_apart() -> None:
    # Gatling's final flush often shares its second with the last periodic flush; InfluxDB would
    # keep only one of two points with equal series and timestamp, losing a `count`.
    flush = "spike.s.allRequests.ok.count 0 1700000000\n"
    assert decode((flush * 3).encode()) == [
        line(GATLING, {**TAGS, "simulation": "s", "request": "allRequests", "status": "ok"}, {"count": 0}, ts)
        for ts in (1700000000000, 1700000000001, 1700000000002)
    ]


def test_sequencer_is_shared_across_connections() -> None:
    sequencer = TimestampSequencer()
    flush = b"spike.s.allRequests.ok.count 0 1700000000\n"
    first = decode(flush, GraphiteDecoder(TAGS, sequencer=sequencer))
    second = decode(flush, GraphiteDecoder(TAGS, sequencer=sequencer))
    assert first[0].endswith(" 1700000000000") and second[0].endswith(" 1700000000001")


def test_an_incomplete_point_is_closed_on_demand_and_on_a_new_second() -> None:
    decoder = GraphiteDecoder(TAGS)
    assert decoder.feed(b"spike.s.r.ok.count 2 1700000000\nspike.s.r.ok.min 1 1700000000\n") == []
    assert decoder.has_open_point
    assert decoder.close_open_point() == [
        line(
            GATLING,
            {**TAGS, "simulation": "s", "request": "r", "status": "ok"},
            {"count": 2, "min": 1},
            1700000000000,
        )
    ]
    decoder.feed(b"spike.s.r.ok.count 2 1700000000\n")
    out = decoder.feed(b"spike.s.r.ok.count 0 1700000001\n")
    assert [p.rsplit(" ", 1)[1] for p in out] == ["1700000000001", "1700000001000"]


def test_tag_values_are_escaped_like_schema_line() -> None:
    tags = {"run_id": "run 1", "region": "a,b", "injector": "x=y"}
    out = decode(b"spike.s.r.ok.count 0 1700000000\n", GraphiteDecoder(tags))
    assert out == [
        line(
            GATLING, {**tags, "simulation": "s", "request": "r", "status": "ok"}, {"count": 0}, 1700000000000
        )
    ]
