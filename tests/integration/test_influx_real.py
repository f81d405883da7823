"""The sinks against real servers: Debian's influxd 1.6.7 (v1) and VictoriaMetrics 1.79 (v2 write).

Each test starts its own throwaway server on free 127.0.0.1 ports in tmp_path.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadorch.metrics import schema
from loadorch.metrics.influx import (
    PASSWORD_ENV,
    TOKEN_ENV,
    InfluxSettings,
    V1Sink,
    V2Sink,
    detect_api,
    make_sink,
)
from loadorch.metrics.sink import SinkRejected, SinkUnavailable
from loadorch.metrics.stack import LocalInflux
from loadorch.metrics.testing_servers import LocalVictoriaMetrics

pytestmark = pytest.mark.timeout(120)

PASSWORD = "adm1n-Pa55-xyz"
TOKEN = "wr0ng-t0ken-abc123"


def require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(
            f"{binary} is not installed: run `make test`, which installs it (or apt-get install -y {package})"
        )


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[LocalVictoriaMetrics]:
    require("victoria-metrics", "victoria-metrics")
    with LocalVictoriaMetrics(tmp_path / "vm") as server:
        yield server


def sample_points(run_id: str) -> tuple[int, list[str]]:
    """Points like the ones spike writes, with tags that need escaping, timestamps near now.

    VictoriaMetrics drops samples older than its retention (1 month), so no fixed old epoch.
    """
    base = int(time.time() * 1000) // 1000 * 1000 - 10_000
    tags = {
        "run_id": run_id,
        "region": "eu-west-2",
        "injector": "eu-west-2-0",
        "simulation": "ViralSpike",
        "request": "get feed, page=1",
        "status": "ok",
    }
    lines = [
        schema.line(
            schema.GATLING,
            tags,
            {"count": 120 + i, "min": 1.0, "max": 88.5, "mean": 12.25, "p99": 70.0 + i},
            base + i * 1000,
        )
        for i in range(3)
    ]
    lines.append(
        schema.line(
            schema.GATLING_USERS,
            {"run_id": run_id, "region": "eu-west-2", "scenario": "allUsers"},
            {"active": 40, "waiting": 0, "done": 7},
            base,
        )
    )
    return base, lines


# ---------------------------------------------------------------- InfluxDB 1.6.7, v1


def test_local_influx_is_debians_1_6_7_on_loopback(influx: LocalInflux) -> None:
    assert influx.version.startswith("1.6.7")
    assert influx.url.startswith("http://127.0.0.1:")


def test_v1_points_round_trip_exactly(influx: LocalInflux) -> None:
    base, lines = sample_points("r-v1")
    sink = make_sink(InfluxSettings(url=influx.url))
    assert isinstance(sink, V1Sink), "InfluxDB 1.6.7 has no /api/v2/write: auto must pick v1"
    assert "1.6.7" in sink.check()
    sink.write(lines)
    sink.close()

    result = influx.query(
        'SELECT "count", "min", "max", "mean", "p99", "request", "status" FROM "gatling" '
        "WHERE run_id = 'r-v1'",
        db="spike",
    )
    (series,) = result["results"][0]["series"]
    assert series["columns"] == ["time", "count", "min", "max", "mean", "p99", "request", "status"]
    assert series["values"] == [
        [base + i * 1000, 120.0 + i, 1.0, 88.5, 12.25, 70.0 + i, "get feed, page=1", "ok"] for i in range(3)
    ]
    users = influx.query("SELECT * FROM gatling_users WHERE run_id = 'r-v1'", db="spike")
    (series,) = users["results"][0]["series"]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert row == {
        "time": base,
        "active": 40.0,
        "waiting": 0.0,
        "done": 7.0,
        "region": "eu-west-2",
        "run_id": "r-v1",
        "scenario": "allUsers",
    }


def test_detect_api_on_influxdb_1_6_7(influx: LocalInflux) -> None:
    assert detect_api(influx.url) == ("v1", influx.version)


def test_v1_unknown_database_and_bad_line_are_rejected(influx: LocalInflux) -> None:
    sink = V1Sink(InfluxSettings(url=influx.url, database="nope"))
    with pytest.raises(SinkRejected) as info:
        sink.check()
    assert (
        "'nope' does not exist" in info.value.message and 'database not found: "nope"' in info.value.message
    )
    sink = V1Sink(InfluxSettings(url=influx.url))
    with pytest.raises(SinkRejected, match="bad timestamp"):
        sink.write(["gatling,run_id=x count=1.0 not-a-time"])
    sink = V1Sink(InfluxSettings(url=influx.url, retention_policy="nope"))
    with pytest.raises(SinkRejected, match="retention policy not found"):
        sink.check()


def test_v2_sink_on_influxdb_1_6_7_says_to_use_v1(influx: LocalInflux) -> None:
    sink = V2Sink(InfluxSettings(url=influx.url, api="v2"))
    with pytest.raises(SinkRejected) as info:
        sink.check()
    sink.close()
    assert "/api/v2/write" in info.value.message and "v1" in info.value.render()


def test_stopped_server_makes_the_sink_unavailable(influx: LocalInflux) -> None:
    sink = V1Sink(InfluxSettings(url=influx.url))
    sink.write(sample_points("r-stop")[1])
    influx.stop()
    with pytest.raises(SinkUnavailable) as info:
        sink.write(sample_points("r-stop")[1])
    assert influx.url in info.value.message
    with pytest.raises(SinkUnavailable):
        sink.check()
    with pytest.raises(SinkUnavailable):
        make_sink(InfluxSettings(url=influx.url))


def test_auth_enabled_influxd_wrong_password_is_rejected_clearly(tmp_path: Path) -> None:
    require("influxd", "influxdb")
    with LocalInflux(tmp_path / "auth", auth_enabled=True, database=None) as influx:
        influx.query(f"CREATE USER admin WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES")
        influx.query('CREATE DATABASE "spike"', username="admin", password=PASSWORD)

        good = V1Sink(InfluxSettings.from_env(influx.url, username="admin", environ={PASSWORD_ENV: PASSWORD}))
        assert "as 'admin'" in good.check()
        _base, lines = sample_points("r-auth")
        good.write(lines)
        result = influx.query(
            "SELECT count(\"count\") FROM gatling WHERE run_id = 'r-auth'",
            db="spike",
            username="admin",
            password=PASSWORD,
        )
        assert result["results"][0]["series"][0]["values"] == [[0, 3]]

        wrong = "not-" + PASSWORD
        bad = V1Sink(InfluxSettings.from_env(influx.url, username="admin", environ={PASSWORD_ENV: wrong}))
        for call in (bad.check, lambda: bad.write(lines)):
            with pytest.raises(SinkRejected) as info:
                call()
            text = info.value.render()
            assert influx.url in text and "401" in text and "authorization failed" in text
            assert f"${PASSWORD_ENV}" in text and "'admin'" in text
            assert wrong not in text and PASSWORD not in text

        anonymous = V1Sink(InfluxSettings(url=influx.url))
        with pytest.raises(SinkRejected) as info:
            anonymous.check()
        assert PASSWORD_ENV in info.value.render()


# ---------------------------------------------------------------- VictoriaMetrics, v2 write


def test_v2_sink_writes_to_victoria_metrics_as_measurement_field_series(
    victoria: LocalVictoriaMetrics,
) -> None:
    assert detect_api(victoria.url)[0] == "v2"
    sink = make_sink(InfluxSettings(url=victoria.url))
    assert isinstance(sink, V2Sink)
    assert victoria.url in sink.check()
    base, lines = sample_points("r-vm")
    sink.write(lines)
    sink.close()

    series = victoria.export('{run_id="r-vm"}', expect_series=8)
    by_name = {row["metric"]["__name__"]: row for row in series}
    assert sorted(by_name) == [
        "gatling_count",
        "gatling_max",
        "gatling_mean",
        "gatling_min",
        "gatling_p99",
        "gatling_users_active",
        "gatling_users_done",
        "gatling_users_waiting",
    ]
    p99 = by_name["gatling_p99"]
    assert p99["metric"] == {
        "__name__": "gatling_p99",
        "run_id": "r-vm",
        "region": "eu-west-2",
        "injector": "eu-west-2-0",
        "simulation": "ViralSpike",
        "request": "get feed, page=1",  # line-protocol escapes undone
        "status": "ok",
    }
    assert p99["timestamps"] == [base, base + 1000, base + 2000]
    assert p99["values"] == [70.0, 71.0, 72.0]
    assert by_name["gatling_count"]["values"] == [120.0, 121.0, 122.0]
    assert by_name["gatling_users_active"]["values"] == [40.0]
    assert by_name["gatling_users_active"]["timestamps"] == [base]


def test_v2_sink_wrong_token_is_rejected_by_a_real_401(tmp_path: Path) -> None:
    require("victoria-metrics", "victoria-metrics")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    # -httpAuth makes VictoriaMetrics demand basic auth; influxdb-client's "Token ..." header fails it.
    with LocalVictoriaMetrics(tmp_path / "vm-auth", basic_auth=("spike", "vm-pass")) as victoria:
        for settings, where in (
            (InfluxSettings.from_env(victoria.url, environ={TOKEN_ENV: TOKEN}), f"${TOKEN_ENV}"),
            (InfluxSettings.from_env(victoria.url, token_file=token_file, environ={}), str(token_file)),
        ):
            sink = make_sink(settings)
            assert isinstance(sink, V2Sink)
            for call in (sink.check, lambda s=sink: s.write(sample_points("r-401")[1])):
                with pytest.raises(SinkRejected) as info:
                    call()
                text = info.value.render()
                assert victoria.url in text and "401" in text and where in text
                assert TOKEN not in text
            sink.close()


def test_v2_sink_on_a_stopped_server_is_unavailable(victoria: LocalVictoriaMetrics) -> None:
    sink = V2Sink(InfluxSettings(url=victoria.url))
    sink.write(sample_points("r-vm-stop")[1])
    victoria.stop()
    with pytest.raises(SinkUnavailable) as info:
        sink.write(sample_points("r-vm-stop")[1])
    assert victoria.url in info.value.message
    with pytest.raises(SinkUnavailable):
        sink.check()
    sink.close()
