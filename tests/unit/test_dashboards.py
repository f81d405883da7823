"""The dashboards as code: structure, normalised output, no drift, and queries true to the schema."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from loadorch.cli.dashboards import app as dashboards_app
from loadorch.dashboards import (
    DATASOURCE_UIDS,
    FLAVOURS,
    LIVE_RUN,
    RUNS,
    dashboard_json,
    dashboards,
    panel_queries,
    render_files,
    template_queries,
    write_dashboards,
)
from loadorch.dashboards.build import query_interval_ms
from loadorch.dashboards.model import Aggregation, Flavour, Query
from loadorch.errors import BadInputError
from loadorch.metrics import schema

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "dashboards"
RUN_ID = "viral-x10-20260101-120000-abc123"
T0_MS = 1_767_268_800_000  # 2026-01-01T12:00:00Z

# -- the schema, read from schema.py's own table ---------------------------------------


def _schema_vocabulary() -> dict[str, tuple[set[str], set[str]]]:
    """measurement -> (tags, fields), parsed from the table in schema.py's docstring.

    That table is THE schema; words in parentheses are notes, not names.
    """
    lines = (schema.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    tags_col, fields_col = lines[start].index("tags"), lines[start].index("fields")
    vocabulary: dict[str, tuple[set[str], set[str]]] = {}
    depth = [0, 0]
    current = ""
    for line in lines[start + 2 :]:
        if line[:tags_col].strip():
            current = line[:tags_col].strip()
            vocabulary[current] = (set(), set())
        for column, text in enumerate((line[tags_col:fields_col], line[fields_col:])):
            outside = []
            for char in text:
                depth[column] += char == "("
                outside.append(char if depth[column] == 0 else " ")
                depth[column] -= char == ")"
            vocabulary[current][column].update(re.findall(r"[a-z_][a-z0-9_]*", "".join(outside)))
    return vocabulary


VOCABULARY = _schema_vocabulary()


def test_schema_table_parses_into_the_constants() -> None:
    assert set(VOCABULARY) == {
        schema.GATLING,
        schema.GATLING_USERS,
        schema.INJECTOR_HEALTH,
        schema.PLANNED_RATE,
        schema.RUN_EVENTS,
        schema.RUN_SUMMARY,
    }
    assert VOCABULARY[schema.GATLING][1] == set(schema.GATLING_FIELDS)
    assert VOCABULARY[schema.GATLING_USERS][1] == set(schema.USERS_FIELDS)
    assert VOCABULARY[schema.INJECTOR_HEALTH][1] == set(schema.HEALTH_FIELDS)
    assert VOCABULARY[schema.GATLING][0] == {
        "run_id",
        "region",
        "injector",
        "simulation",
        "request",
        "status",
    }
    assert "peak_rate_per_s" in VOCABULARY[schema.RUN_SUMMARY][1]
    assert VOCABULARY[schema.RUN_EVENTS] == ({"run_id", "event"}, {"text", "verdict"})


def _all_dashboards() -> list[dict[str, Any]]:
    return [d for flavour in FLAVOURS for d in dashboards(flavour)]


def _flavour(dashboard: dict[str, Any]) -> Flavour:
    return "flux" if "flux" in dashboard["tags"] else "influxql"


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, query) for every query a dashboard runs: panels, variables, annotations."""
    out = [(p["title"], t["query"]) for p in dashboard["panels"] for t in p["targets"]]
    out += [
        (f"variable {v['name']}", v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation and "query" in annotation["target"]:
            out.append((f"annotation {annotation['name']}", annotation["target"]["query"]))
    return out


# -- structure -------------------------------------------------------------------


def test_uids_and_titles_are_stable_and_unique() -> None:
    uids = [d["uid"] for d in _all_dashboards()]
    assert uids == ["spike-live-run", "spike-runs", "spike-live-run-flux", "spike-runs-flux"]
    titles = [d["title"] for d in _all_dashboards()]
    assert len(set(titles)) == len(titles)
    assert dashboard_json(LIVE_RUN, "influxql")["title"] == "spike: live run"
    assert dashboard_json(RUNS, "influxql")["title"] == "spike: runs"


@pytest.mark.parametrize("dashboard", _all_dashboards(), ids=lambda d: d["uid"])
def test_every_panel_has_datasource_targets_and_stable_id(dashboard: dict[str, Any]) -> None:
    flavour = _flavour(dashboard)
    assert "id" not in dashboard and "version" not in dashboard  # instance fields, never written
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) and i > 0 for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UIDS[flavour]}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids)
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["query"].strip()
            if flavour == "influxql":
                assert target["rawQuery"] is True
                assert target["resultFormat"] == ("table" if panel["type"] == "table" else "time_series")
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        mine = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_same_panels_in_both_flavours() -> None:
    for definition in (LIVE_RUN, RUNS):
        influxql, flux = dashboard_json(definition, "influxql"), dashboard_json(definition, "flux")
        shape = [
            (p["id"], p["title"], p["type"], p["gridPos"], len(p["targets"])) for p in influxql["panels"]
        ]
        assert shape == [
            (p["id"], p["title"], p["type"], p["gridPos"], len(p["targets"])) for p in flux["panels"]
        ]


def test_variables_present() -> None:
    live = dashboard_json(LIVE_RUN, "influxql")["templating"]["list"]
    by_name = {v["name"]: v for v in live}
    assert list(by_name) == ["run_id", "region", "request", "status"]
    assert by_name["run_id"]["query"] == 'SHOW TAG VALUES FROM "run_events" WITH KEY = "run_id"'
    assert by_name["run_id"]["sort"] == 2  # Z..A: newest first within a profile
    assert by_name["run_id"]["multi"] is False
    for name in ("region", "request"):
        assert by_name[name]["multi"] and by_name[name]["includeAll"] and by_name[name]["allValue"] == ".*"
        assert "'$run_id'" in by_name[name]["query"]  # cascades from the chosen run
    runs = [v["name"] for v in dashboard_json(RUNS, "influxql")["templating"]["list"]]
    assert runs == ["run_a", "run_b"]
    flux = [v["name"] for v in dashboard_json(LIVE_RUN, "flux")["templating"]["list"]]
    assert flux == ["bucket", "run_id", "region", "request", "status"]


@pytest.mark.parametrize("dashboard", _all_dashboards(), ids=lambda d: d["uid"])
def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    builtins = {"timeFilter", "__interval", "__interval_ms", "__from", "__to", "col"}
    texts = [q for _, q in _queries(dashboard)] + [p["title"] for p in dashboard["panels"]]
    for text in texts:
        for name in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(?!\{)(\w+)", text):
            used = name[0] or name[1]
            assert used in defined | builtins or used.startswith("tag_"), f"${used} in {text!r}"


def test_live_run_panels_cover_the_brief() -> None:
    panels = {p["title"]: p for p in dashboard_json(LIVE_RUN, "influxql")["panels"]}
    arrivals = panels["Arrivals: planned vs achieved users/s per region"]["targets"]
    assert '"planned_rate"' in arrivals[0]["query"] and '"gatling_users"' in arrivals[1]["query"]
    throughput = panels["Throughput: requests/s per region"]["targets"][0]["query"]
    assert "\"request\" = 'allRequests'" in throughput and "\"status\" = 'all'" in throughput
    cpu = panels["Injector CPU (saturation above 80%)"]["fieldConfig"]["defaults"]
    assert cpu["thresholds"]["steps"][-1] == {"color": "red", "value": 80.0}
    assert cpu["custom"]["thresholdsStyle"] == {"mode": "line"}
    names = {a["name"] for a in dashboard_json(LIVE_RUN, "influxql")["annotations"]["list"]}
    assert {"run events", "spike run start/end"} <= names
    live = dashboard_json(LIVE_RUN, "influxql")
    assert live["refresh"] == "5s" and live["time"] == {"from": "now-15m", "to": "now"}


# -- normalised output and drift ---------------------------------------------------


def test_output_is_normalised_and_deterministic() -> None:
    files = render_files()
    assert files == render_files()
    for relative, text in files.items():
        assert text.endswith("\n") and not text.endswith("\n\n"), relative
        if relative.endswith(".json"):
            data = json.loads(text)
            assert json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text
            assert '\n  "annotations"' in text  # 2-space indent


def test_committed_dashboards_equal_generated_output() -> None:
    """dashboards/ is generated: regenerate with `spike dashboards export` after changing the definition."""
    generated = render_files()
    committed = {
        str(path.relative_to(COMMITTED)): path.read_text(encoding="utf-8")
        for path in sorted(COMMITTED.rglob("*"))
        if path.is_file()
    }
    assert sorted(committed) == sorted(generated), "stale or missing files in dashboards/"
    for relative, text in generated.items():
        assert committed[relative] == text, f"dashboards/{relative} drifted; run `spike dashboards export`"


def test_write_dashboards_writes_every_file_and_rewrites_nothing_unchanged(tmp_path: Path) -> None:
    paths = write_dashboards(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in paths) == sorted(render_files())
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    time.sleep(0.01)
    write_dashboards(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps


def test_cli_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(dashboards_app, ["export", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out/influxql/spike-live-run.json").is_file()
    assert (tmp_path / "out/provisioning/datasources.yaml").is_file()


# -- provisioning ------------------------------------------------------------------


def test_datasource_provisioning_uses_env_for_every_secret() -> None:
    text = render_files()["provisioning/datasources.yaml"]
    data = yaml.safe_load(text)
    by_uid = {d["uid"]: d for d in data["datasources"]}
    assert set(by_uid) == set(DATASOURCE_UIDS.values())
    assert by_uid["spike-influxql"]["type"] == by_uid["spike-flux"]["type"] == "influxdb"
    assert by_uid["spike-flux"]["jsonData"]["version"] == "Flux"
    env_ref = re.compile(r"\$\{?[A-Z][A-Z0-9_]*\}?")
    for datasource in data["datasources"]:
        for secret in datasource["secureJsonData"].values():
            assert env_ref.fullmatch(secret), f"literal secret in {datasource['name']}"
        assert env_ref.fullmatch(datasource["url"])


def test_dashboard_provisioning_points_at_both_flavours() -> None:
    data = yaml.safe_load(render_files()["provisioning/dashboards.yaml"])
    providers = data["providers"]
    assert [p["options"]["path"].rsplit("/", 1)[1] for p in providers] == list(FLAVOURS)
    assert all(p["folderUid"] == "spike" and p["type"] == "file" for p in providers)


# -- queries true to the schema ------------------------------------------------------


def _check_influxql(where: str, query: str) -> None:
    measurements = set(re.findall(r'FROM "([^"]+)"', query))
    assert measurements and measurements <= set(VOCABULARY), f"{where}: unknown measurement in {query}"
    allowed = set().union(*(VOCABULARY[m][0] | VOCABULARY[m][1] for m in measurements))
    aliases = set(re.findall(r'AS "([^"]+)"', query))
    without_aliases = re.sub(r'AS "[^"]+"', "", query)
    for name in set(re.findall(r'"([^"]+)"', without_aliases)) - measurements:
        assert name in allowed | aliases, f"{where}: {name!r} is not in the schema of {measurements}"


def _check_flux(where: str, query: str) -> None:
    measurements = set(re.findall(r'_measurement == "([^"]+)"', query))
    assert measurements and measurements <= set(VOCABULARY), f"{where}: unknown measurement in {query}"
    tags = set().union(*(VOCABULARY[m][0] for m in measurements))
    fields = set().union(*(VOCABULARY[m][1] for m in measurements))
    for tag in set(re.findall(r"\br\.(\w+)", query)) - {"_measurement", "_field"}:
        assert tag in tags, f"{where}: tag {tag!r} is not in the schema of {measurements}"
    for name in re.findall(r'_field == "([^"]+)"', query):
        assert name in fields, f"{where}: field {name!r} is not in the schema of {measurements}"
    for name in re.findall(r'tag: "([^"]+)"', query):
        assert name in tags
    renamed = set(re.findall(r'set\(key: "_field", value: "([^"]+)"\)', query))
    for listing in re.findall(r"columns: \[([^\]]*)\]|rowKey: \[([^\]]*)\]", query):
        for name in re.findall(r'"([^"]+)"', listing[0] or listing[1]):
            assert name in tags | fields | renamed | {"_time", "_field", "_value"}, (
                f"{where}: column {name!r}"
            )


@pytest.mark.parametrize("dashboard", _all_dashboards(), ids=lambda d: d["uid"])
def test_every_query_mentions_only_schema_names(dashboard: dict[str, Any]) -> None:
    check = _check_flux if _flavour(dashboard) == "flux" else _check_influxql
    queries = _queries(dashboard)
    assert len(queries) > len(dashboard["panels"])
    for where, query in queries:
        check(where, query)


def test_schema_check_catches_a_wrong_name() -> None:
    with pytest.raises(AssertionError):
        _check_influxql("x", 'SELECT max("p42") FROM "gatling" WHERE "run_id" = \'r\'')
    with pytest.raises(AssertionError):
        _check_influxql("x", 'SELECT max("p95") FROM "gatling" WHERE "host" = \'h\'')
    with pytest.raises(AssertionError):
        _check_flux(
            "x", 'from(bucket: "b") |> filter(fn: (r) => r._measurement == "gatling" and r.host == "h")'
        )


def test_query_model_refuses_incoherent_queries() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        Query(schema.GATLING, ("count",), Aggregation.RATE)
    with pytest.raises(ValueError, match="exactly one field"):
        Query(schema.GATLING, ("count", "p50"), Aggregation.RATE, name="x")
    with pytest.raises(ValueError, match="time picker"):
        Query(schema.GATLING, ("p50",), Aggregation.MAX, time_filtered=False)


# -- macro expansion ---------------------------------------------------------------


def test_panel_queries_expand_every_macro() -> None:
    live = dashboard_json(LIVE_RUN, "influxql")
    start, end = T0_MS, T0_MS + 15 * 60_000
    queries = panel_queries(live, {"run_id": RUN_ID}, start, end)
    assert len(queries) == sum(len(p["targets"]) for p in live["panels"])
    for title, query in queries:
        assert not re.search(r"\$(?!/)", query), f"{title}: unexpanded macro in {query}"
        assert "$timeFilter" not in query
    throughput = dict(queries)["Throughput: requests/s per region"]
    assert f"time >= {start}ms and time <= {end}ms" in throughput
    assert "GROUP BY time(1s)" in throughput  # 15 min / 1000 points rounds up to the write period
    assert f"\"run_id\" = '{RUN_ID}'" in throughput and '"region" =~ /^.*$/' in throughput


def test_panel_queries_escape_values_like_grafana() -> None:
    live = dashboard_json(LIVE_RUN, "influxql")
    variables = {"run_id": "it's", "region": ["eu-west-2", "us.east"], "request": "read_feed", "status": "ok"}
    queries = dict(panel_queries(live, variables, T0_MS, T0_MS + 60_000))
    query = queries["Latency per request: p50 / p95 / p99 ($status)"]
    assert "\"run_id\" = 'it\\'s'" in query
    assert '"region" =~ /^(eu-west-2|us\\.east)$/' in query
    assert '"request" =~ /^read_feed$/' in query and "\"status\" = 'ok'" in query


def test_panel_queries_need_a_run_and_refuse_flux() -> None:
    with pytest.raises(BadInputError, match=r"\$run_id"):
        panel_queries(dashboard_json(LIVE_RUN, "influxql"), {}, T0_MS, T0_MS + 1000)
    with pytest.raises(BadInputError, match="Flux"):
        panel_queries(dashboard_json(LIVE_RUN, "flux"), {"run_id": RUN_ID}, T0_MS, T0_MS + 1000)


def test_interval_is_range_over_points_rounded_up() -> None:
    assert query_interval_ms(0, 15 * 60_000) == 1_000
    assert query_interval_ms(0, 24 * 3_600_000) == 120_000
    assert query_interval_ms(0, 60_000, max_data_points=10) == 10_000
    with pytest.raises(BadInputError):
        query_interval_ms(5, 5)


# -- every InfluxQL query on a real InfluxDB 1.x --------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Influx:
    """A throwaway influxd on 127.0.0.1 with its data in a temporary folder."""

    def __init__(self, root: Path) -> None:
        http_port, rpc_port = _free_port(), _free_port()
        config = root / "influxdb.conf"
        config.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc_port}"\n'
            f'[meta]\n  dir = "{root}/meta"\n'
            f'[data]\n  dir = "{root}/data"\n  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{http_port}"\n  log-enabled = false\n'
        )
        self.url = f"http://127.0.0.1:{http_port}"
        self.log = (root / "influxd.log").open("w")
        self.process = subprocess.Popen(
            ["influxd", "run", "-config", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"influxd did not start; see {root / 'influxd.log'}")
                time.sleep(0.05)
        self.query("CREATE DATABASE spike", post=True)

    def query(self, text: str, *, post: bool = False) -> dict[str, Any]:
        params = urllib.parse.urlencode({"db": "spike", "q": text, "epoch": "ms"})
        with urllib.request.urlopen(
            f"{self.url}/query?{params}", data=b"" if post else None, timeout=10
        ) as r:
            result: dict[str, Any] = json.loads(r.read())["results"][0]
            return result

    def write(self, lines: list[str]) -> None:
        request = urllib.request.Request(
            f"{self.url}/write?db=spike&precision=ms", data="\n".join(lines).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


Fields = dict[str, float | int | str | bool]


def _run_points(seconds: int) -> list[str]:
    """A 2-region, 2-injectors-per-region run per schema.py: every measurement, every tag."""
    lines: list[str] = []
    for s in range(seconds):
        ts = T0_MS + s * 1000
        for region in ("eu-west-2", "us-east-1"):
            lines.append(
                schema.line(
                    schema.PLANNED_RATE, {"run_id": RUN_ID, "region": region}, {"users_per_s": 10.0}, ts
                )
            )
            for n in (1, 2):
                injector = f"{region}-{n}"
                base = {"run_id": RUN_ID, "region": region, "injector": injector, "simulation": "spike"}
                users: Fields = {"active": 3, "waiting": 0, "done": 5 * s}  # 5 users/s started per injector
                lines.append(schema.line(schema.GATLING_USERS, {**base, "scenario": "allUsers"}, users, ts))
                health: Fields = {**dict.fromkeys(schema.HEALTH_FIELDS, 1.0), "cpu_pct": 50.0 + s}
                lines.append(schema.line(schema.INJECTOR_HEALTH, {**base, "host": "h"}, health, ts))
                for request in ("allRequests", "read_feed"):
                    for status, count in (("ok", 9), ("ko", 1), ("all", 10)):
                        stats: Fields = {
                            **dict.fromkeys(schema.GATLING_FIELDS, 20.0),
                            "count": count,
                            "p99": 40.0 + n,
                        }
                        tags = {**base, "request": request, "status": status}
                        lines.append(schema.line(schema.GATLING, tags, stats, ts))
    end = T0_MS + seconds * 1000
    for offset, event, text in ((0, "start", "run started"), (seconds * 1000, "end", "run ended")):
        lines.append(
            schema.line(schema.RUN_EVENTS, {"run_id": RUN_ID, "event": event}, {"text": text}, T0_MS + offset)
        )
    verdict: Fields = {"text": "FAILED: p95 above 300 ms", "verdict": "FAILED"}
    lines.append(schema.line(schema.RUN_EVENTS, {"run_id": RUN_ID, "event": "verdict"}, verdict, end + 1))
    summary: Fields = {
        "requests": 1200,
        "ok": 1080,
        "ko": 120,
        "error_rate": 0.1,
        "p50": 20,
        "p75": 20,
        "p95": 20,
        "p99": 42,
        "max": 60,
        "peak_rate_per_s": 40,
    }
    for scope, name in (
        ("global", "all"),
        ("region", "eu-west-2"),
        ("region", "us-east-1"),
        ("request", "read_feed"),
    ):
        tags = {"run_id": RUN_ID, "profile": "viral-x10", "verdict": "FAILED", "scope": scope, "name": name}
        lines.append(schema.line(schema.RUN_SUMMARY, tags, summary, end + 1))
    error_tags = {"run_id": RUN_ID, "profile": "viral-x10", "verdict": "FAILED", "scope": "error"}
    error_tags["name"] = "status.find.in(200), but actually found 503"
    lines.append(schema.line(schema.RUN_SUMMARY, error_tags, {"ko": 120}, end + 1))
    return lines


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    if shutil.which("influxd") is None:
        pytest.fail("influxd (InfluxDB 1.6.7) is missing; `make test` installs it (apt-get install influxdb)")
    server = Influx(tmp_path_factory.mktemp("influxd"))
    try:
        server.write(_run_points(30))
        yield server
    finally:
        server.stop()


def _values(result: dict[str, Any], column: str) -> dict[str, list[Any]]:
    """Non-null values of one column per series, keyed by the series' tag values."""
    out: dict[str, list[Any]] = {}
    for series in result.get("series", []):
        index = series["columns"].index(column)
        key = ",".join((series.get("tags") or {}).values())
        out[key] = [row[index] for row in series["values"] if row[index] is not None]
    assert out and all(out.values()), f"no {column} values in {result}"
    return out


@pytest.mark.integration
def test_every_influxql_query_runs_on_influxdb_1x(influx: Influx) -> None:
    """Each panel, variable and annotation query parses on a real influxd and returns data."""
    variables = {"run_id": RUN_ID, "run_a": RUN_ID, "run_b": RUN_ID}
    for dashboard in dashboards("influxql"):
        start, end = T0_MS - 5_000, T0_MS + 40_000
        queries = panel_queries(dashboard, variables, start, end) + template_queries(
            dashboard, variables, start, end
        )
        for where, query in queries:
            result = influx.query(query)
            assert "error" not in result, f"{where}: {result.get('error')}\n{query}"
            assert result.get("series"), f"{where}: no data\n{query}"


@pytest.mark.integration
def test_live_figures_add_up_across_injectors(influx: Influx) -> None:
    """At 5 s per point: 2 injectors x 10 requests/s = 20 requests/s per region, and so on."""
    live = dashboard_json(LIVE_RUN, "influxql")
    listed = panel_queries(live, {"run_id": RUN_ID}, T0_MS, T0_MS + 29_999, max_data_points=6)
    queries = dict(listed)  # the first query of each panel
    assert "time(5s)" in queries["Throughput: requests/s per region"]

    throughput = _values(influx.query(queries["Throughput: requests/s per region"]), "requests/s")
    assert throughput.keys() == {"eu-west-2", "us-east-1"}
    assert all(v == pytest.approx(20.0) for series in throughput.values() for v in series)

    ko = _values(influx.query(queries["Errors: KO/s per region"]), "KO/s")
    assert all(v == pytest.approx(2.0) for series in ko.values() for v in series)

    active = _values(influx.query(queries["Active users per region"]), "active users")
    assert all(v == 6 for series in active.values() for v in series)

    planned_query, achieved_query = [q for title, q in listed if title.startswith("Arrivals")]
    planned = _values(influx.query(planned_query), "planned")
    assert all(v == pytest.approx(10.0) for series in planned.values() for v in series)
    achieved = _values(influx.query(achieved_query), "achieved")  # 2 injectors x 5 users/s
    assert all(v == pytest.approx(10.0) for series in achieved.values() for v in series)

    worst = _values(influx.query(queries["Latency per region: p50 / p95 / p99 ($status)"]), "p99")
    assert all(v == 42.0 for series in worst.values() for v in series)  # the worse of 41 and 42
