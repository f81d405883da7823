"""Contract tests of Grafana provisioning against a local fake Grafana (tests/fakes/fake_grafana.py).

No Grafana can be installed here; the fake answers the endpoints grafana-client
calls with the status codes Grafana documents, so these tests pin spike's side
of that contract: what it sends, and what it makes of each answer.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_grafana import Answer, FakeGrafana
from typer.testing import CliRunner

from loadorch.cli.dashboards import app as dashboards_app
from loadorch.dashboards.build import dashboards
from loadorch.dashboards.grafana import (
    DatasourceSettings,
    GrafanaAuthError,
    GrafanaError,
    GrafanaKey,
    annotate,
    load_key,
    push,
)
from loadorch.errors import ExitCode

ADMIN_KEY = "glsa_admin_0123456789abcdef"
EDITOR_KEY = "glsa_editor_0123456789abcdef"
VIEWER_KEY = "glsa_viewer_0123456789abcdef"
WRONG_KEY = "glsa_wrong_0123456789abcdef"
INFLUX = DatasourceSettings(url="http://influxdb:8086", user="grafana", password="influx-secret-pw")
RUN_ID = "viral-x10-20260101-120000-abc123"


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana({ADMIN_KEY: "Admin", EDITOR_KEY: "Editor", VIEWER_KEY: "Viewer"}) as fake:
        yield fake


def key(value: str = ADMIN_KEY) -> GrafanaKey:
    return GrafanaKey(value, "$SPIKE_GRAFANA_KEY")


def test_first_push_creates_everything(grafana: FakeGrafana) -> None:
    """Contract test: an empty Grafana gets the datasource, the folder and both dashboards."""
    report = push(grafana.url, key(), INFLUX)

    assert report.datasource == "created" and report.folder == "created"
    assert report.dashboards == {"spike-live-run": "created", "spike-runs": "created"}
    assert grafana.statuses() == [
        ("GET", "/api/datasources/uid/spike-influxql", 404),
        ("POST", "/api/datasources", 200),
        ("GET", "/api/folders/spike", 404),
        ("POST", "/api/folders", 200),
        ("GET", "/api/dashboards/uid/spike-live-run", 404),
        ("POST", "/api/dashboards/db", 200),
        ("GET", "/api/dashboards/uid/spike-runs", 404),
        ("POST", "/api/dashboards/db", 200),
    ]
    datasource = grafana.state.datasources["spike-influxql"]
    assert datasource["type"] == "influxdb" and datasource["url"] == "http://influxdb:8086"
    assert datasource["jsonData"]["dbName"] == "spike"
    assert datasource["secureJsonData"] == {
        "password": "influx-secret-pw"
    }  # sent write-only, as Grafana wants
    assert grafana.state.folders["spike"]["title"] == "spike"
    for dashboard in dashboards("influxql"):
        stored = grafana.state.dashboards[dashboard["uid"]]
        assert stored["folderUid"] == "spike"
        assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")} == dashboard
    saved = [r.body for r in grafana.state.requests if r.path == "/api/dashboards/db"]
    assert all(body["overwrite"] is False and body["folderUid"] == "spike" for body in saved)


def test_second_push_is_idempotent(grafana: FakeGrafana) -> None:
    """Contract test: pushing again updates in place by uid and duplicates nothing."""
    push(grafana.url, key(), INFLUX)
    versions = {uid: d["dashboard"]["version"] for uid, d in grafana.state.dashboards.items()}
    before = len(grafana.state.requests)

    report = push(grafana.url, key(), INFLUX)

    assert report.datasource == "updated" and report.folder == "unchanged"
    assert report.dashboards == {"spike-live-run": "unchanged", "spike-runs": "unchanged"}
    assert len(grafana.state.datasources) == 1 and len(grafana.state.folders) == 1
    assert sorted(grafana.state.dashboards) == ["spike-live-run", "spike-runs"]
    assert {uid: d["dashboard"]["version"] for uid, d in grafana.state.dashboards.items()} == versions
    again = grafana.statuses()[before:]
    assert ("PUT", "/api/datasources/uid/spike-influxql", 200) in again
    assert not [s for s in again if s[0] == "POST"]  # nothing created


def test_a_dashboard_changed_in_grafana_is_updated_in_place(grafana: FakeGrafana) -> None:
    """Contract test: a dashboard edited in the UI is brought back to the code's version (same uid, no copy)."""
    push(grafana.url, key(), INFLUX)
    stored = grafana.state.dashboards["spike-live-run"]["dashboard"]
    stored["title"] = "edited by hand"
    stored["version"] += 1

    report = push(grafana.url, key(), INFLUX)

    assert report.dashboards["spike-live-run"] == "updated"
    assert grafana.state.dashboards["spike-live-run"]["dashboard"]["title"] == "spike: live run"
    assert grafana.state.dashboards["spike-live-run"]["dashboard"]["version"] == 3
    assert len(grafana.state.dashboards) == 2


def test_version_conflict_412_is_retried_once_with_overwrite(grafana: FakeGrafana) -> None:
    """Contract test: someone saves between spike's GET and POST; Grafana says 412, spike overwrites once."""
    push(grafana.url, key(), INFLUX)
    grafana.state.dashboards["spike-runs"]["dashboard"]["title"] = "edited"
    grafana.state.saved_elsewhere.add("spike-runs")

    report = push(grafana.url, key(), INFLUX)

    assert report.dashboards["spike-runs"] == "overwritten"
    posts = [
        (r.status, r.body["overwrite"]) for r in grafana.state.requests if r.path == "/api/dashboards/db"
    ]
    assert posts[-2:] == [(412, False), (200, True)]
    assert grafana.state.dashboards["spike-runs"]["dashboard"]["title"] == "spike: runs"


def test_same_title_other_uid_412_is_a_clear_error(grafana: FakeGrafana) -> None:
    """Contract test: a 412 that overwriting would not cure (name-exists) stops with a clear message."""
    push(grafana.url, key(), INFLUX)
    del grafana.state.dashboards["spike-runs"]
    grafana.state.dashboards["someone-elses"] = {
        "dashboard": {"id": 99, "uid": "someone-elses", "title": "spike: runs", "version": 1},
        "folderUid": "spike",
        "slug": "spike-runs",
    }

    with pytest.raises(GrafanaError) as caught:
        push(grafana.url, key(), INFLUX)

    message = caught.value.render()
    assert "'spike-runs'" in message and "same name" in message and "rename or delete" in message
    assert ADMIN_KEY not in message


def test_wrong_key_401_is_a_clear_error_without_the_key(
    grafana: FakeGrafana, caplog: pytest.LogCaptureFixture
) -> None:
    """Contract test: Grafana's 401 becomes a message naming SPIKE_GRAFANA_KEY, never the key itself."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GrafanaAuthError) as caught:
        push(grafana.url, key(WRONG_KEY), INFLUX)

    error = caught.value
    message = error.render()
    assert "401" in message and "SPIKE_GRAFANA_KEY" in message and "SPIKE_GRAFANA_KEY_FILE" in message
    assert error.exit_code == ExitCode.BAD_INPUT
    for text in (message, repr(error), str(error.__cause__), str(error.__context__), caplog.text):
        assert WRONG_KEY not in text
    assert grafana.statuses() == [("GET", "/api/datasources/uid/spike-influxql", 401)]


def test_empty_or_malformed_key_is_refused_before_any_request(grafana: FakeGrafana) -> None:
    """Contract test: spike never sends a request without a usable Bearer key."""
    with pytest.raises(GrafanaAuthError, match="is empty"):
        push(grafana.url, key(""), INFLUX)
    with pytest.raises(GrafanaAuthError, match="HTTP header") as caught:
        push(grafana.url, key("glsa secret\n"), INFLUX)
    assert "glsa secret" not in caught.value.render()
    assert grafana.statuses() == []


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Basic YWRtaW46YWRtaW4=", f"Bearer {WRONG_KEY}"])
def test_fake_answers_401_without_a_valid_bearer_key(grafana: FakeGrafana, authorization: str | None) -> None:
    """Contract test of the fake itself: Grafana's 401 for a missing, empty, non-Bearer or unknown key."""
    request = urllib.request.Request(f"{grafana.url}/api/folders/spike")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["message"] in ("Unauthorized", "invalid API key")


@pytest.mark.parametrize(
    ("role_key", "refused"),
    [(VIEWER_KEY, "datasources:read"), (EDITOR_KEY, "datasources:read")],
)
def test_key_without_the_role_403_says_which_role(grafana: FakeGrafana, role_key: str, refused: str) -> None:
    """Contract test: a key without Admin (datasources) gets Grafana's 403, reported with the role to grant."""
    with pytest.raises(GrafanaAuthError) as caught:
        push(grafana.url, key(role_key), INFLUX)
    message = caught.value.render()
    assert "403" in message and refused in message and "Admin" in message
    assert role_key not in message


def test_viewer_key_cannot_annotate_403(grafana: FakeGrafana) -> None:
    """Contract test: annotations need Editor; a Viewer's key gets 403."""
    with pytest.raises(GrafanaAuthError, match="403"):
        annotate(grafana.url, key(VIEWER_KEY), RUN_ID, 1_700_000_000_000, "run started")


def test_connection_refused_names_the_url() -> None:
    """Contract test: nothing listening on the port is an infrastructure error naming the URL."""
    with FakeGrafana({}) as fake:
        url = fake.url  # a port that was free a moment ago and is closed now
    with pytest.raises(GrafanaError) as caught:
        push(f"http://admin:pw@{url.removeprefix('http://')}", key(), INFLUX, timeout_s=2)
    message = caught.value.render()
    assert url in message and "connection refused" in message
    assert "pw@" not in message  # user:password in the URL is not echoed either
    assert caught.value.exit_code == ExitCode.INFRASTRUCTURE


def test_datasource_name_taken_409_is_a_clear_error(grafana: FakeGrafana) -> None:
    """Contract test: Grafana's 409 for a datasource name used by another uid."""
    grafana.state.datasources["other"] = {
        "uid": "other",
        "name": "spike InfluxDB 1.x (InfluxQL)",
        "version": 1,
    }
    with pytest.raises(GrafanaError, match="already has a datasource named"):
        push(grafana.url, key(), INFLUX)


def test_folder_title_taken_409_is_a_clear_error(grafana: FakeGrafana) -> None:
    """Contract test: Grafana's 409 for a folder titled "spike" under another uid."""
    grafana.state.folders["abc"] = {"id": 7, "uid": "abc", "title": "spike", "version": 1}
    with pytest.raises(GrafanaError, match="folder titled 'spike'"):
        push(grafana.url, key(), INFLUX)


def test_renamed_folder_is_put_back_and_412_overwritten(grafana: FakeGrafana) -> None:
    """Contract test: folder found by uid with another title is updated (PUT), 412 retried with overwrite."""
    grafana.state.folders["spike"] = {"id": 7, "uid": "spike", "title": "renamed", "version": 2}
    assert push(grafana.url, key(), INFLUX).folder == "updated"
    grafana.state.folders["spike"].update(title="renamed again", version=5)
    real_get = grafana.state.get_folder

    def stale_get(uid: str):  # type: ignore[no-untyped-def]
        answer = real_get(uid)
        answer.body = {**answer.body, "version": 4}  # as if saved again right after our GET
        return answer

    grafana.state.get_folder = stale_get  # type: ignore[method-assign]
    assert push(grafana.url, key(), INFLUX).folder == "overwritten"
    assert grafana.state.folders["spike"]["title"] == "spike"
    puts = [s for s in grafana.statuses() if s[0] == "PUT" and s[1] == "/api/folders/spike"]
    assert [s[2] for s in puts] == [200, 412, 200]


def test_annotations_land_with_the_run_id_tag(grafana: FakeGrafana) -> None:
    """Contract test: run start/end annotations POST /api/annotations and carry spike + run_id:<id> tags."""
    first = annotate(grafana.url, key(EDITOR_KEY), RUN_ID, 1_700_000_000_000, "run started", ["start"])
    second = annotate(
        grafana.url, key(EDITOR_KEY), RUN_ID, 1_700_000_000_000, "run", ["run"], time_end_ms=1_700_000_070_000
    )
    assert first != second
    start, whole = grafana.state.annotations
    assert start["tags"] == ["spike", f"run_id:{RUN_ID}", "start"]
    assert start["time"] == 1_700_000_000_000 and start["text"] == "run started"
    assert whole["timeEnd"] == 1_700_000_070_000
    assert grafana.statuses() == [("POST", "/api/annotations", 200)] * 2
    # The live dashboard's annotation query asks for exactly these tags.
    live = dashboards("influxql")[0]
    wanted = next(a for a in live["annotations"]["list"] if a["name"] == "spike run start/end")
    assert [t.replace("$run_id", RUN_ID) for t in wanted["target"]["tags"]] == start["tags"][:2]


def test_flux_push_sends_token_bucket_and_flux_dashboards(grafana: FakeGrafana) -> None:
    """Contract test: the 2.x flavour provisions its own datasource and the -flux dashboards."""
    influx = DatasourceSettings.from_env(
        "http://influx2:8086", "flux", bucket="loadtests", env={"SPIKE_INFLUX_TOKEN": "tok-123"}
    )
    report = push(grafana.url, key(), influx)
    assert report.dashboards == {"spike-live-run-flux": "created", "spike-runs-flux": "created"}
    datasource = grafana.state.datasources["spike-flux"]
    assert datasource["jsonData"] == {
        "version": "Flux",
        "organization": "spike",
        "defaultBucket": "loadtests",
    }
    assert datasource["secureJsonData"] == {"token": "tok-123"}
    bucket = grafana.state.dashboards["spike-live-run-flux"]["dashboard"]["templating"]["list"][0]
    assert bucket["name"] == "bucket" and bucket["query"] == "loadtests"


def test_secrets_never_in_repr() -> None:
    assert ADMIN_KEY not in repr(key()) and ADMIN_KEY not in str(key())
    assert "influx-secret-pw" not in repr(INFLUX)
    assert "tok" not in repr(DatasourceSettings(token="tok-123"))


def test_flux_without_token_is_bad_input() -> None:
    with pytest.raises(Exception, match="SPIKE_INFLUX_TOKEN"):
        DatasourceSettings.from_env(flavour="flux", env={})


def test_load_key_from_env_then_file(tmp_path: Path) -> None:
    assert load_key(env={"SPIKE_GRAFANA_KEY": " k1 \n"}).reveal() == "k1"
    key_file = tmp_path / "grafana.key"
    key_file.write_text("k2\n")
    assert load_key(env={"SPIKE_GRAFANA_KEY_FILE": str(key_file)}).reveal() == "k2"
    assert load_key(key_file, env={"SPIKE_GRAFANA_KEY": "k1"}).reveal() == "k2"  # explicit file wins
    with pytest.raises(GrafanaAuthError, match="SPIKE_GRAFANA_KEY is not set"):
        load_key(env={})
    with pytest.raises(GrafanaAuthError, match="cannot read"):
        load_key(tmp_path / "missing.key", env={})


def test_cli_push_reports_and_hides_the_key(grafana: FakeGrafana) -> None:
    """Contract test: `spike dashboards push` end to end, then with a wrong key (exit 2, key not shown)."""
    runner = CliRunner()
    ok = runner.invoke(
        dashboards_app,
        ["push", "--grafana-url", grafana.url],
        env={"SPIKE_GRAFANA_KEY": ADMIN_KEY, "COLUMNS": "200"},
    )
    assert ok.exit_code == 0, ok.output
    assert "spike-live-run" in ok.output and "created" in ok.output

    wrong = runner.invoke(
        dashboards_app, ["push", "--grafana-url", grafana.url], env={"SPIKE_GRAFANA_KEY": WRONG_KEY}
    )
    assert wrong.exit_code == ExitCode.BAD_INPUT
    assert "SPIKE_GRAFANA_KEY" in wrong.output and WRONG_KEY not in wrong.output

    bad_flavour = runner.invoke(
        dashboards_app,
        ["push", "--grafana-url", grafana.url, "--flavour", "sql"],
        env={"SPIKE_GRAFANA_KEY": "x"},
    )
    assert bad_flavour.exit_code == 2 and "influxql, flux" in bad_flavour.output


def test_a_secret_echoed_by_grafana_is_scrubbed(grafana: FakeGrafana) -> None:
    """Contract test: a 400 whose message echoes what was sent never shows the password or the key."""

    def echoing_create(body: Any) -> Answer:
        return Answer(400, {"message": f"bad datasource {body['secureJsonData']} for {ADMIN_KEY}"})

    grafana.state.create_datasource = echoing_create  # type: ignore[method-assign]
    with pytest.raises(GrafanaError) as caught:
        push(grafana.url, key(), INFLUX)
    message = caught.value.render()
    assert "400" in message and "***" in message
    assert "influx-secret-pw" not in message and ADMIN_KEY not in message
    assert caught.value.__cause__ is None  # the raw exception holds the secret: not chained
