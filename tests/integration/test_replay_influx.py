"""influx_series (InfluxQL) against a real Debian influxd 1.6.7 on a free loopback port."""

from __future__ import annotations

import urllib.request

import pytest

from loadorch.errors import BadInputError, InfrastructureError
from loadorch.metrics.stack import LocalInflux
from loadorch.replay.sources import influx_series, per_second_counts, series_hits

pytestmark = pytest.mark.timeout(120)
BASE_MS = 1_790_000_000_000


def write(influx: LocalInflux, lines: list[str]) -> None:
    request = urllib.request.Request(
        f"{influx.url}/write?db=spike&precision=ms", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def test_influxql_series_round_trip(influx: LocalInflux) -> None:
    lines = [f"http_requests,host=a count={10 + i} {BASE_MS + i * 10_000}" for i in range(6)]
    lines += [f"http_requests,host=b count=1 {BASE_MS + i * 10_000}" for i in range(6)]
    write(influx, lines)
    query = 'SELECT "count" FROM "http_requests" GROUP BY "host"'
    points = influx_series(influx.url, query, database="spike", environ={})
    assert points == [(BASE_MS + i * 10_000, 11.0 + i) for i in range(6)]  # the two hosts summed
    counts = per_second_counts(series_hits(points))
    assert counts.start_ms == BASE_MS and counts.total == sum(11 + i for i in range(6))
    summed = influx_series(
        influx.url,
        f'SELECT sum("count") FROM "http_requests" WHERE time >= {BASE_MS}ms AND time < {BASE_MS + 60_000}ms '
        "GROUP BY time(20s) fill(none)",
        database="spike",
        environ={},
    )
    assert summed == [(BASE_MS, 23.0), (BASE_MS + 20_000, 27.0), (BASE_MS + 40_000, 31.0)]


def test_influxql_errors_are_clear(influx: LocalInflux) -> None:
    with pytest.raises(BadInputError, match="InfluxDB"):
        influx_series(influx.url, "SELEKT nonsense", database="spike", environ={})
    with pytest.raises(BadInputError, match="database not found"):
        influx_series(influx.url, 'SELECT "count" FROM "x"', database="nope", environ={})
    url = influx.url
    influx.stop()
    with pytest.raises(InfrastructureError, match="unreachable") as info:
        influx_series(
            url, 'SELECT "count" FROM "x"', database="spike", environ={"SPIKE_INFLUX_TOKEN": "s3cr3t"}
        )
    assert "s3cr3t" not in info.value.render()
