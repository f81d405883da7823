"""Recording parsers: combined/common, ALB (plain and gzip), CSV, a spike run, Flux CSV; counting."""

from __future__ import annotations

import calendar
import gzip
import json
import shutil
from pathlib import Path

import pytest

from loadorch.errors import BadInputError
from loadorch.replay.sources import (
    Hit,
    ReadStats,
    detect_format,
    parse_alb,
    parse_combined,
    parse_flux_csv,
    per_second_counts,
    read_hits,
    read_spike_run,
    series_hits,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gatling-3.11.5"
T0 = calendar.timegm((2026, 10, 10, 13, 55, 36, 0, 0, 0)) * 1000

COMBINED = [
    '127.0.0.1 - - [10/Oct/2026:13:55:36 +0000] "GET /feed?page=1 HTTP/1.1" 200 2326 "-" "Mozilla/5.0 (X11)"\n',
    '10.0.0.2 - bob [10/Oct/2026:15:55:37 +0200] "POST /posts HTTP/1.1" 201 12 "https://x/" "curl/8"\n',
    '10.0.0.3 - - [10/Oct/2026:08:55:37 -0500] "GET /posts/7 HTTP/2.0" 404 0\n',
]


def alb_line(stamp: str, status: str, request: str) -> str:
    return (
        f"https {stamp} app/my-lb/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 "
        f'{status} 200 34 366 "{request}" "curl/7.46.0" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 '
        "arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/tg/73e2d6bc24d8a067 "
        '"Root=1-58337262-36d228ad5d99923122bbe354" "www.example.com" "arn:aws:acm:cert" 0 '
        f'{stamp} "forward" "-" "-" "10.0.0.1:80" "200" "-" "-"\n'
    )


def test_combined_and_common_lines_with_time_zones() -> None:
    stats = ReadStats()
    hits = list(parse_combined(COMBINED, stats))
    assert hits == [
        Hit(T0, "GET", "/feed?page=1", 200),
        Hit(T0 + 1000, "POST", "/posts", 201),
        Hit(T0 + 1000, "GET", "/posts/7", 404),
    ]
    assert (stats.lines, stats.parsed, stats.malformed, stats.first_malformed) == (3, 3, 0, None)


def test_combined_malformed_lines_are_counted_with_the_first() -> None:
    stats = ReadStats()
    lines = [
        COMBINED[0],
        "garbage here\n",
        "\n",
        '1.2.3.4 - - [99/Foo/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1\n',
    ]
    assert len(list(parse_combined(lines, stats))) == 1
    assert (stats.lines, stats.parsed, stats.malformed) == (3, 1, 2)
    assert stats.first_malformed == (2, "garbage here")


def test_alb_lines_plain_and_gzip(tmp_path: Path) -> None:
    lines = [
        alb_line("2026-10-10T13:55:36.123456Z", "200", "GET https://shop.example:443/feed?page=2 HTTP/1.1"),
        alb_line("2026-10-10T13:55:37.000001Z", "503", "POST http://shop.example:80/posts HTTP/1.1"),
        alb_line("2026-10-10T13:55:37.5Z", "-", "GET https://shop.example:443 HTTP/1.1"),
    ]
    stats = ReadStats()
    assert list(parse_alb(lines, stats)) == [
        Hit(T0 + 123, "GET", "/feed?page=2", 200),
        Hit(T0 + 1000, "POST", "/posts", 503),
        Hit(T0 + 1500, "GET", "/", 0),
    ]
    gz = tmp_path / "elb.log"  # no .gz suffix: gzip is found by its magic bytes
    gz.write_bytes(gzip.compress("".join(lines).encode()))
    assert detect_format(gz) == "alb"
    assert [hit.path for hit in read_hits(gz)] == ["/feed?page=2", "/posts", "/"]


def test_detect_format(tmp_path: Path) -> None:
    cases = {
        "access.log": "".join(COMBINED),
        "alb.log": alb_line("2026-10-10T13:55:36.1Z", "200", "GET https://h:443/ HTTP/1.1"),
        "rates.csv": "timestamp,count\n1790000000,5\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert detect_format(tmp_path / "access.log") == "combined"
    assert detect_format(tmp_path / "alb.log") == "alb"
    assert detect_format(tmp_path / "rates.csv") == "csv"
    (tmp_path / "weird.txt").write_text("hello world\nnot a log\n")
    with pytest.raises(BadInputError) as info:
        detect_format(tmp_path / "weird.txt")
    text = info.value.render()
    assert "unknown recording format" in text and "weird.txt:1" in text and "'hello world'" in text
    assert "combined" in text and "ALB" in text and "CSV" in text


def test_empty_file_and_no_parsable_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    with pytest.raises(BadInputError, match="empty") as info:
        list(read_hits(empty))
    assert str(empty) in info.value.render()
    bad = tmp_path / "bad.log"
    bad.write_text("\nfirst bad line\nsecond bad\n")
    with pytest.raises(BadInputError) as info:
        list(read_hits(bad, fmt="combined"))
    assert f"{bad}:1" in info.value.render() and "'first bad line'" in info.value.render()


def test_malformed_threshold(tmp_path: Path) -> None:
    good = COMBINED[0]
    below = tmp_path / "below.log"
    below.write_text(good * 199 + "broken\n")  # 0.5%
    stats = ReadStats()
    assert len(list(read_hits(below, stats=stats))) == 199
    assert (stats.malformed, stats.first_malformed) == (1, (200, "broken"))
    above = tmp_path / "above.log"
    above.write_text(good * 97 + "broken\n" * 3)  # 3%
    with pytest.raises(BadInputError) as info:
        list(read_hits(above))
    text = info.value.render()
    assert "3 of 100 lines" in text and f"{above}:98" in text and "1.00%" in text
    assert len(list(read_hits(above, max_malformed_share=0.05))) == 97


def test_csv_epoch_seconds_ms_iso_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "timestamp,count,path\n"
        "1790000000,3,/feed\n"
        "1790000000,1,/posts/1\n"
        "1790000001000,4,/feed\n"
        "2026-09-21T14:13:22Z,2,/feed\n"
    )
    hits = list(read_hits(path))
    base = 1790000000000
    assert hits == [
        Hit(base, "GET", "/feed", 0, 3),
        Hit(base, "GET", "/posts/1", 0, 1),
        Hit(base + 1000, "GET", "/feed", 0, 4),
        Hit(base + 2000, "GET", "/feed", 0, 2),
    ]


def test_csv_row_interval_spreads_counts_exactly(tmp_path: Path) -> None:
    path = tmp_path / "minutes.csv"
    path.write_text("timestamp,count\n0,125\n60,60\n120,7\n")
    counts = per_second_counts(read_hits(path))
    assert counts.start_ms == 0 and len(counts) == 127 and counts.total == 192  # the last 7 over 7 s
    assert list(counts.counts[:6]) == [3, 3, 3, 3, 3, 2] and counts.counts[60] == 1
    assert sum(counts.counts[120:]) == 7


def test_csv_out_of_order_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("timestamp,count\n100,1\n102,1\n101,1\n")
    with pytest.raises(BadInputError) as info:
        list(read_hits(path))
    assert f"{path}:4" in info.value.render() and "out of time order" in info.value.render()


def test_csv_without_header(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("ts,n\n1,2\n")
    with pytest.raises(BadInputError, match="timestamp,count"):
        list(read_hits(path, fmt="csv"))


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "r-1"
    meta = json.loads((FIXTURES / "fixture.json").read_text())
    run.mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"run_id": "r-1", "start_at_ms": meta["start_at_ms"]}))
    for injector in ("eu-1", "us-1"):
        results = run / "injectors" / injector / "results" / "spikesimulation-1"
        results.mkdir(parents=True)
        shutil.copyfile(FIXTURES / injector / "simulation.log", results / "simulation.log")
    return run


def test_spike_run_users_and_requests(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert detect_format(run) == "spike-run"
    recording = read_spike_run(run)
    starts = sum(
        line.startswith("USER\tsocial\tSTART")
        for log in recording.logs
        for line in log.read_text().splitlines()
    )
    requests = sum(
        line.startswith("REQUEST") for log in recording.logs for line in log.read_text().splitlines()
    )
    stats = ReadStats()
    counts = per_second_counts(
        read_hits(run, kind="users", stats=stats), window=(recording.start_at_ms, None)
    )
    assert counts.start_ms == recording.start_at_ms and counts.total == starts > 0
    assert stats.malformed == 0
    # curves eu 0:10,3:30,6:30 and us 0:5,3:25,6:10: arrivals ramp up over the first seconds
    assert 0 < counts.counts[0] < counts.counts[1] < counts.counts[2]
    names = {hit.path for hit in read_hits(run, kind="requests")}
    assert names <= {"read_feed", "read_post", "create_post", "like_post"} and "read_feed" in names
    assert sum(1 for _ in read_hits(run)) == requests


def test_per_second_counts_window_and_empty_window() -> None:
    hits = [Hit(T0 + 2500, "GET", "/", 200), Hit(T0 + 10, "GET", "/", 200), Hit(T0 + 900, "GET", "/", 200)]
    counts = per_second_counts(hits)
    assert counts.start_ms == T0 and list(counts.counts) == [2, 0, 1]
    windowed = per_second_counts(hits, window=(T0 + 500, T0 + 4500))
    assert windowed.start_ms == T0 + 500 and list(windowed.counts) == [1, 0, 1, 0]
    with pytest.raises(BadInputError, match="no requests were recorded between") as info:
        per_second_counts(hits, window=(T0 + 5000, T0 + 9000))
    assert "window" in info.value.render()


FLUX_SAMPLE = """\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string
#group,false,false,true,true,false,false,true,true
#default,_result,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement
,,0,2026-10-10T13:55:00Z,2026-10-10T13:56:00Z,2026-10-10T13:55:36Z,120,count,http
,,0,2026-10-10T13:55:00Z,2026-10-10T13:56:00Z,2026-10-10T13:55:37.5Z,80.5,count,http

#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string
#group,false,false,true,true,false,false,true,true
#default,_result,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement
,,1,2026-10-10T13:55:00Z,2026-10-10T13:56:00Z,2026-10-10T13:55:38Z,,count,http
,,1,2026-10-10T13:55:00Z,2026-10-10T13:56:00Z,2026-10-10T13:55:39Z,7,count,http

"""


def test_flux_csv_tables() -> None:
    assert parse_flux_csv(FLUX_SAMPLE) == [(T0, 120.0), (T0 + 1500, 80.5), (T0 + 3000, 7.0)]


def test_series_hits_counts_and_rates() -> None:
    points = [(0, 20.0), (10_000, 10.0), (20_000, 0.0)]
    counts = per_second_counts(series_hits(points))
    assert counts.total == 30 and list(counts.counts[:10]) == [2] * 10
    rated = per_second_counts(series_hits([(0, 3.0), (10_000, 1.5)], values_are="rate"))
    assert rated.total == 45
