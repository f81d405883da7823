from pathlib import Path

from loadorch.livestream import LiveStream, parse_point
from loadorch.metrics import schema

START = 1_790_000_000_000


def gatling(status: str, count: float, p95: float, ts_ms: int, injector: str = "a-1") -> str:
    tags = {
        "run_id": "r",
        "region": "a",
        "injector": injector,
        "simulation": "s",
        "request": "allRequests",
        "status": status,
    }
    return schema.line(schema.GATLING, tags, {"count": count, "p95": p95}, ts_ms)


def test_parse_point_reads_what_the_schema_writes() -> None:
    text = schema.line(schema.RUN_EVENTS, {"run_id": "r", "event": "end"}, {"text": "a b", "n": 3}, 5)
    measurement, tags, fields, ts = parse_point(gatling("all", 12, 30, 7)) or ("", {}, {}, 0)
    assert (measurement, tags["status"], fields, ts) == ("gatling", "all", {"count": 12.0, "p95": 30.0}, 7)
    assert parse_point("garbage") is None
    assert parse_point(text) is None or parse_point(text)[0] == "run_events"  # type: ignore[index]


def test_stream_sums_injectors_per_region_second_and_keeps_the_worst_p95(tmp_path: Path) -> None:
    a, b = tmp_path / "a.lp", tmp_path / "b.lp"
    stream = LiveStream(START)
    stream.add_tap(a, "a")
    stream.add_tap(b, "a")
    # flushed at the end of second 0 (ts in second 1) -> counted for second 0
    a.write_text(gatling("all", 10, 20, START + 1000) + "\n" + gatling("ko", 2, 50, START + 1000) + "\n")
    b.write_text(
        gatling("all", 5, 40, START + 1001, "a-2") + "\n" + gatling("all", 7, 9, START + 2000, "a-2")
    )
    stream.poll()
    row = stream.region_second("a", 0)
    assert row is not None and (row.requests, row.ko, row.p95_ms) == (15, 2, 40)
    assert stream.region_second("a", 1) is None  # b's last line is incomplete: not read yet
    with b.open("a") as handle:
        handle.write("\n")
    stream.poll()
    row1 = stream.region_second("a", 1)
    assert row1 is not None and row1.requests == 7
    assert stream.requests["a"] == 22 and stream.ko["a"] == 2
