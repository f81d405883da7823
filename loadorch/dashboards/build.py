"""spike's two dashboards, defined once and rendered to Grafana JSON in both flavours.

`LIVE_RUN` and `RUNS` below are the one definition. `dashboard_json()` renders
one of them for a flavour (InfluxQL for InfluxDB 1.x, Flux for 2.x);
`write_dashboards()` writes every rendering plus Grafana's file-provisioning
YAML; `panel_queries()` expands Grafana's macros into the concrete InfluxQL
Grafana would send, so the queries can be run against a real InfluxDB.

The JSON is normalised (sorted keys, 2-space indent, trailing newline, stable
uids and panel ids, no `id` or `version`) so regenerating it is a no-op and a
change to a panel is a readable diff.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from loadorch.dashboards.model import (
    FLAVOURS,
    WRITE_PERIOD,
    Aggregation,
    CustomVariable,
    Dashboard,
    Flavour,
    Match,
    Panel,
    Query,
    RunEventsAnnotation,
    TagVariable,
    Variable,
    VarMatch,
)
from loadorch.errors import BadInputError
from loadorch.metrics.schema import (
    GATLING,
    GATLING_USERS,
    INJECTOR_HEALTH,
    PLANNED_RATE,
    RUN_EVENTS,
    RUN_SUMMARY,
)

FOLDER_UID = "spike"
FOLDER_TITLE = "spike"
DEFAULT_BUCKET = "spike"

DATASOURCE_UIDS: dict[Flavour, str] = {"influxql": "spike-influxql", "flux": "spike-flux"}
DATASOURCE_NAMES: dict[Flavour, str] = {
    "influxql": "spike InfluxDB 1.x (InfluxQL)",
    "flux": "spike InfluxDB 2.x (Flux)",
}

# Where the provisioning YAML expects the generated folders inside Grafana's
# container or host, e.g. `-v ./dashboards:/var/lib/grafana/dashboards/spike`.
PROVISIONED_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/spike"

# Grafana dashboard JSON model version the panels are written for (Grafana 10.3+).
SCHEMA_VERSION = 39

# Environment variables Grafana interpolates in datasources.yaml. Secrets use
# the `$NAME` form: Grafana's docs advise it for values that may contain '$',
# which `${NAME}` would expand a second time.
ENV_INFLUX_URL = "SPIKE_INFLUX_URL"
ENV_INFLUX_DB = "SPIKE_INFLUX_DB"
ENV_INFLUX_USER = "SPIKE_INFLUX_USER"
ENV_INFLUX_PASSWORD = "SPIKE_INFLUX_PASSWORD"
ENV_INFLUX_ORG = "SPIKE_INFLUX_ORG"
ENV_INFLUX_BUCKET = "SPIKE_INFLUX_BUCKET"
ENV_INFLUX_TOKEN = "SPIKE_INFLUX_TOKEN"

# -- the one definition ----------------------------------------------------------

RUN = VarMatch("run_id", "run_id")
REGIONS = VarMatch("region", "region", multi=True)
REQUESTS = VarMatch("request", "request", multi=True)
LATENCY_STATUS = VarMatch("status", "status")
ALL_REQUESTS = Match("request", "allRequests")
EACH_REQUEST = Match("request", "allRequests", negate=True)
ALL_USERS = Match("scenario", "allUsers")
STATUS_ALL = Match("status", "all")
STATUS_KO = Match("status", "ko")

_SUMMARY_UNITS = (
    ("error_rate", "percentunit"),
    ("p50", "ms"),
    ("p75", "ms"),
    ("p95", "ms"),
    ("p99", "ms"),
    ("max", "ms"),
    ("peak_rate_per_s", "reqps"),
)

_NO_MESSAGES = (
    " Errors by message are not a live measurement: they are in the run's summary.json"
    " (spike's exact merged statistics) once the run ends."
)

LIVE_RUN = Dashboard(
    uid="spike-live-run",
    title="spike: live run",
    description="One spike run as it happens: planned vs achieved load, latency, errors and injector health.",
    time_from="now-15m",
    refresh="5s",
    variables=(
        TagVariable(
            "run_id",
            "run",
            RUN_EVENTS,
            "run_id",
            descending=True,
            description="Run ids embed their UTC start, so Z..A is newest first within a profile.",
        ),
        TagVariable("region", "region", PLANNED_RATE, "region", where=(RUN,), multi=True),
        TagVariable("request", "request", GATLING, "request", where=(RUN, EACH_REQUEST), multi=True),
        CustomVariable(
            "status",
            "latency of",
            ("all", "ok"),
            default="all",
            description="Latency of all requests, or of OK ones only (KO may be fast refusals or timeouts).",
        ),
    ),
    annotations=(
        RunEventsAnnotation(
            "run events",
            Query(RUN_EVENTS, ("text",), Aggregation.ROWS, where=(RUN,), columns=("event",)),
        ),
    ),
    api_annotation_tags=("spike", "run_id:$run_id"),
    panels=(
        Panel(
            1,
            "Arrivals: planned vs achieved users/s per region",
            "timeseries",
            (
                Query(
                    PLANNED_RATE,
                    ("users_per_s",),
                    Aggregation.MEAN,
                    where=(RUN, REGIONS),
                    group_by=("region",),
                    name="planned",
                ),
                Query(
                    GATLING_USERS,
                    ("active", "done"),
                    Aggregation.CUMULATIVE_RATE,
                    where=(RUN, REGIONS, ALL_USERS),
                    group_by=("region",),
                    name="achieved",
                ),
            ),
            "New users per second: the plan (planned_rate) against users Gatling actually started"
            " (growth per second of active + done users, summed over the region's injectors).",
            unit="short",
        ),
        Panel(
            2,
            "Throughput: requests/s per region",
            "timeseries",
            (
                Query(
                    GATLING,
                    ("count",),
                    Aggregation.RATE,
                    where=(RUN, REGIONS, ALL_REQUESTS, STATUS_ALL),
                    group_by=("region",),
                    name="requests/s",
                ),
            ),
            "Requests completed per second (OK and KO), summed over the region's injectors."
            " Each injector writes one count per 1 s period.",
            unit="reqps",
        ),
        Panel(
            3,
            "Latency per region: p50 / p95 / p99 ($status)",
            "timeseries",
            (
                Query(
                    GATLING,
                    ("p50", "p95", "p99"),
                    Aggregation.MAX,
                    where=(RUN, REGIONS, ALL_REQUESTS, LATENCY_STATUS),
                    group_by=("region",),
                ),
            ),
            "Response-time percentiles of the worst injector in each region per interval:"
            " percentiles of different injectors cannot be merged live. The exact merged"
            " percentiles are in the final results below.",
            unit="ms",
        ),
        Panel(
            4,
            "Latency per request: p50 / p95 / p99 ($status)",
            "timeseries",
            (
                Query(
                    GATLING,
                    ("p50", "p95", "p99"),
                    Aggregation.MAX,
                    where=(RUN, REGIONS, REQUESTS, EACH_REQUEST, LATENCY_STATUS),
                    group_by=("request",),
                ),
            ),
            "Response-time percentiles per request name, worst injector of the selected regions.",
            unit="ms",
        ),
        Panel(
            5,
            "Errors: KO/s per region",
            "timeseries",
            (
                Query(
                    GATLING,
                    ("count",),
                    Aggregation.RATE,
                    where=(RUN, REGIONS, ALL_REQUESTS, STATUS_KO),
                    group_by=("region",),
                    name="KO/s",
                ),
            ),
            "Failed (KO) requests per second." + _NO_MESSAGES,
            unit="reqps",
        ),
        Panel(
            6,
            "Errors: KO/s per request",
            "timeseries",
            (
                Query(
                    GATLING,
                    ("count",),
                    Aggregation.RATE,
                    where=(RUN, REGIONS, REQUESTS, EACH_REQUEST, STATUS_KO),
                    group_by=("request",),
                    name="KO/s",
                ),
            ),
            "Failed (KO) requests per second per request name." + _NO_MESSAGES,
            unit="reqps",
        ),
        Panel(
            7,
            "Active users per region",
            "timeseries",
            (
                Query(
                    GATLING_USERS,
                    ("active",),
                    Aggregation.SUM_OF_LAST,
                    where=(RUN, REGIONS, ALL_USERS),
                    group_by=("region",),
                    name="active users",
                ),
            ),
            "Virtual users in flight, summed over the region's injectors.",
            unit="short",
        ),
        Panel(
            8,
            "Injector CPU (saturation above 80%)",
            "timeseries",
            (
                Query(
                    INJECTOR_HEALTH,
                    ("cpu_pct",),
                    Aggregation.MAX,
                    where=(RUN, REGIONS),
                    group_by=("injector",),
                ),
            ),
            "CPU of each injector host. Above the red line an injector is likely the bottleneck:"
            " its achieved rate and latencies say more about the injector than about the target.",
            unit="percent",
            threshold=80.0,
            max_value=100.0,
        ),
        Panel(
            9,
            "Final results per request",
            "table",
            (
                Query(
                    RUN_SUMMARY,
                    ("requests", "ok", "ko", "error_rate", "p50", "p95", "p99", "max"),
                    Aggregation.LAST,
                    where=(RUN, Match("scope", "request")),
                    group_by=("name",),
                ),
            ),
            "spike's exact merged statistics, written when the run ends (empty while it runs).",
            column_units=_SUMMARY_UNITS,
        ),
        Panel(
            10,
            "Final results: whole run and regions",
            "table",
            (
                Query(
                    RUN_SUMMARY,
                    ("requests", "ok", "ko", "error_rate", "p50", "p95", "p99", "max", "peak_rate_per_s"),
                    Aggregation.LAST,
                    where=(RUN, Match("scope", "request", negate=True), Match("scope", "error", negate=True)),
                    group_by=("scope", "name"),
                ),
            ),
            "The run as a whole (scope global) and per region, from spike's exact merged statistics.",
            column_units=_SUMMARY_UNITS,
        ),
        Panel(
            12,
            "Final errors by message",
            "table",
            (
                Query(
                    RUN_SUMMARY,
                    ("ko",),
                    Aggregation.LAST,
                    where=(RUN, Match("scope", "error")),
                    group_by=("name",),
                ),
            ),
            "Every KO message and how often it happened, from the merged logs (written when the run ends).",
        ),
        Panel(
            11,
            "Run events",
            "table",
            (
                Query(
                    RUN_EVENTS,
                    ("text", "verdict"),
                    Aggregation.ROWS,
                    where=(RUN,),
                    columns=("event",),
                    time_filtered=False,
                ),
            ),
            "Start, phases, end and verdict of the run, newest first.",
            width=24,
        ),
    ),
)

RUN_A = VarMatch("run_id", "run_a")
RUN_B = VarMatch("run_id", "run_b")


def _side(letter: str, run: VarMatch, first_id: int) -> tuple[Panel, Panel]:
    """The same two tables for one side of the comparison."""
    label = f"Run {letter} (${run.variable})"
    return (
        Panel(
            first_id,
            f"{label}: whole run and regions",
            "table",
            (
                Query(
                    RUN_SUMMARY,
                    ("requests", "ko", "error_rate", "p50", "p95", "p99", "peak_rate_per_s"),
                    Aggregation.LAST,
                    where=(run, Match("scope", "request", negate=True)),
                    group_by=("scope", "name"),
                ),
            ),
            f"Run {letter} as a whole and per region.",
            column_units=_SUMMARY_UNITS,
        ),
        Panel(
            first_id + 2,
            f"{label}: latency per request",
            "table",
            (
                Query(
                    RUN_SUMMARY,
                    ("requests", "error_rate", "p50", "p95", "p99"),
                    Aggregation.LAST,
                    where=(run, Match("scope", "request")),
                    group_by=("name",),
                ),
            ),
            f"Exact p50/p95/p99 per request of run {letter}.",
            column_units=_SUMMARY_UNITS,
        ),
    )


_A_SUMMARY, _A_REQUESTS = _side("A", RUN_A, 2)
_B_SUMMARY, _B_REQUESTS = _side("B", RUN_B, 3)

RUNS = Dashboard(
    uid="spike-runs",
    title="spike: runs",
    description="Every run's outcome, and two runs side by side.",
    time_from="now-30d",
    variables=(
        TagVariable("run_a", "run A", RUN_SUMMARY, "run_id", descending=True),
        TagVariable("run_b", "run B", RUN_SUMMARY, "run_id", descending=True),
    ),
    panels=(
        Panel(
            1,
            "Runs",
            "table",
            (
                Query(
                    RUN_SUMMARY,
                    ("peak_rate_per_s", "requests", "error_rate", "p95", "p99"),
                    Aggregation.ROWS,
                    where=(Match("scope", "global"), Match("name", "all")),
                    columns=("run_id", "profile", "verdict"),
                ),
            ),
            "One row per run that ended in the time range, newest first.",
            width=24,
            height=10,
            column_units=_SUMMARY_UNITS,
        ),
        # Left column run A, right column run B, rows aligned.
        _A_SUMMARY,
        _B_SUMMARY,
        _A_REQUESTS,
        _B_REQUESTS,
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (LIVE_RUN, RUNS)

# -- rendering -------------------------------------------------------------------


def datasource_ref(flavour: Flavour) -> dict[str, str]:
    """How panels point at the provisioned datasource: by its stable uid."""
    return {"type": "influxdb", "uid": DATASOURCE_UIDS[flavour]}


def dashboard_uid(dashboard: Dashboard, flavour: Flavour) -> str:
    """Both flavours can live in one Grafana, so the Flux one gets its own uid."""
    return dashboard.uid if flavour == "influxql" else f"{dashboard.uid}-flux"


def dashboard_title(dashboard: Dashboard, flavour: Flavour) -> str:
    # Grafana refuses two dashboards with one title in a folder (412 name-exists).
    return dashboard.title if flavour == "influxql" else f"{dashboard.title} (Flux)"


def _variable_json(variable: Variable, flavour: Flavour) -> dict[str, Any]:
    if isinstance(variable, CustomVariable):
        return {
            "current": {"selected": True, "text": variable.default, "value": variable.default},
            "description": variable.description,
            "hide": 0,
            "includeAll": False,
            "label": variable.label,
            "multi": False,
            "name": variable.name,
            "options": [
                {"selected": option == variable.default, "text": option, "value": option}
                for option in variable.options
            ],
            "query": ",".join(variable.options),
            "skipUrlSync": False,
            "type": "custom",
        }
    query = variable.render(flavour)
    out: dict[str, Any] = {
        "current": {},
        "datasource": datasource_ref(flavour),
        "definition": query,
        "description": variable.description,
        "hide": 0,
        "includeAll": variable.multi,
        "label": variable.label,
        "multi": variable.multi,
        "name": variable.name,
        "options": [],
        "query": query,
        "refresh": 2,  # on time range change, so runs started since load appear
        "regex": "",
        "skipUrlSync": False,
        "sort": 2 if variable.descending else 1,  # alphabetical desc / asc
        "type": "query",
    }
    if variable.multi:
        # A custom All value is passed through unescaped: /^.*$/ instead of a
        # long alternation of every region or request.
        out["allValue"] = ".*"
        out["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return out


def _bucket_variable(bucket: str) -> dict[str, Any]:
    return {
        "description": "The InfluxDB 2.x bucket spike writes to.",
        "hide": 2,
        "label": "bucket",
        "name": "bucket",
        "query": bucket,
        "skipUrlSync": False,
        "type": "constant",
    }


def _target_json(query: Query, ref_id: str, flavour: Flavour) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": datasource_ref(flavour),
        "query": query.render(flavour),
        "refId": ref_id,
    }
    if flavour == "influxql":
        target["rawQuery"] = True
        target["resultFormat"] = "table" if query.is_table else "time_series"
        if not query.is_table:
            target["alias"] = query.influxql_alias()
    return target


def _panel_json(panel: Panel, grid: dict[str, int], flavour: Flavour) -> dict[str, Any]:
    targets = [_target_json(q, chr(ord("A") + i), flavour) for i, q in enumerate(panel.queries)]
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if panel.threshold is not None:
        steps.append({"color": "red", "value": panel.threshold})
    defaults: dict[str, Any] = {"thresholds": {"mode": "absolute", "steps": steps}, "unit": panel.unit}
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    out: dict[str, Any] = {
        "datasource": datasource_ref(flavour),
        "description": panel.description,
        "gridPos": grid,
        "id": panel.id,
        "targets": targets,
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "timeseries":
        defaults["min"] = 0
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 0,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "line" if panel.threshold is not None else "off"},
        }
        out["interval"] = WRITE_PERIOD
        out["options"] = {
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        out["fieldConfig"] = {"defaults": defaults, "overrides": []}
    else:
        out["options"] = {"cellHeight": "sm", "showHeader": True}
        out["fieldConfig"] = {
            "defaults": defaults,
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": column},
                    "properties": [{"id": "unit", "value": unit}],
                }
                for column, unit in panel.column_units
            ],
        }
        if any(q.aggregation is Aggregation.LAST for q in panel.queries):
            # InfluxQL stamps last() rows of several selectors with the epoch:
            # meaningless here, so the column is hidden.
            out["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    return out


def _layout(panels: Sequence[Panel]) -> list[dict[str, int]]:
    """Left-to-right, top-to-bottom placement on Grafana's 24-column grid."""
    grids: list[dict[str, int]] = []
    x = y = row_height = 0
    for panel in panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        grids.append({"h": panel.height, "w": panel.width, "x": x, "y": y})
        x += panel.width
        row_height = max(row_height, panel.height)
    return grids


def _annotations_json(dashboard: Dashboard, flavour: Flavour) -> list[dict[str, Any]]:
    grafana = {"type": "grafana", "uid": "-- Grafana --"}
    out: list[dict[str, Any]] = [
        # Grafana adds this built-in entry when it is missing; writing it keeps
        # a dashboard saved from the UI identical to the generated one.
        {
            "builtIn": 1,
            "datasource": grafana,
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
    ]
    if dashboard.api_annotation_tags:
        out.append(
            {
                "datasource": grafana,
                "enable": True,
                "iconColor": "purple",
                "name": "spike run start/end",
                "target": {
                    "limit": 100,
                    "matchAny": False,
                    "tags": list(dashboard.api_annotation_tags),
                    "type": "tags",
                },
            }
        )
    for annotation in dashboard.annotations:
        query = annotation.query.render(flavour)
        entry: dict[str, Any] = {
            "datasource": datasource_ref(flavour),
            "enable": True,
            "iconColor": "orange",
            "name": annotation.name,
        }
        if flavour == "influxql":
            entry.update(
                {
                    "query": query,
                    "tagsColumn": ",".join(annotation.query.columns),
                    "target": {"query": query, "rawQuery": True, "refId": "Anno", "resultFormat": "table"},
                    "textColumn": annotation.query.fields[0],
                }
            )
        else:
            entry.update(
                {
                    "mappings": {
                        "tags": {"source": "field", "value": ",".join(annotation.query.columns)},
                        "text": {"source": "field", "value": annotation.query.fields[0]},
                    },
                    "target": {"query": query, "refId": "Anno"},
                }
            )
        out.append(entry)
    return out


def dashboard_json(dashboard: Dashboard, flavour: Flavour, *, bucket: str = DEFAULT_BUCKET) -> dict[str, Any]:
    """The Grafana dashboard JSON model of one dashboard in one flavour.

    No `id` and no `version`: those belong to one Grafana instance, and
    leaving them out keeps the file the same wherever it is generated.
    """
    if flavour not in FLAVOURS:
        raise BadInputError(f"unknown flavour {flavour!r}; valid values: {', '.join(FLAVOURS)}")
    variables = [_variable_json(v, flavour) for v in dashboard.variables]
    if flavour == "flux":
        variables.insert(0, _bucket_variable(bucket))
    out: dict[str, Any] = {
        "annotations": {"list": _annotations_json(dashboard, flavour)},
        "description": dashboard.description,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: line up rate, latency and CPU in time
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "tags": ["spike", flavour],
                "title": "spike dashboards",
                "type": "dashboards",
            }
        ],
        "panels": [
            _panel_json(p, g, flavour)
            for p, g in zip(dashboard.panels, _layout(dashboard.panels), strict=True)
        ],
        "refresh": dashboard.refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": [*dashboard.tags, flavour],
        "templating": {"list": variables},
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m"]},
        "timezone": "browser",
        "title": dashboard_title(dashboard, flavour),
        "uid": dashboard_uid(dashboard, flavour),
    }
    return out


def dashboards(flavour: Flavour, *, bucket: str = DEFAULT_BUCKET) -> list[dict[str, Any]]:
    """Every spike dashboard rendered for one flavour."""
    return [dashboard_json(d, flavour, bucket=bucket) for d in DASHBOARDS]


def normalised_json(obj: Any) -> str:
    """Sorted keys, 2-space indent, trailing newline: the one way spike writes JSON files."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- provisioning ----------------------------------------------------------------


def datasources_provisioning() -> dict[str, Any]:
    """Grafana's datasources.yaml content: both InfluxDB flavours, secrets from the environment."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": DATASOURCE_NAMES["influxql"],
                "uid": DATASOURCE_UIDS["influxql"],
                "type": "influxdb",
                "access": "proxy",
                "url": f"${{{ENV_INFLUX_URL}}}",
                "user": f"${{{ENV_INFLUX_USER}}}",
                # `database` for Grafana before 8.x, jsonData.dbName after.
                "database": f"${{{ENV_INFLUX_DB}}}",
                "jsonData": {"dbName": f"${{{ENV_INFLUX_DB}}}", "httpMode": "POST"},
                "secureJsonData": {"password": f"${ENV_INFLUX_PASSWORD}"},
                "editable": False,
            },
            {
                "name": DATASOURCE_NAMES["flux"],
                "uid": DATASOURCE_UIDS["flux"],
                "type": "influxdb",
                "access": "proxy",
                "url": f"${{{ENV_INFLUX_URL}}}",
                "jsonData": {
                    "version": "Flux",
                    "organization": f"${{{ENV_INFLUX_ORG}}}",
                    "defaultBucket": f"${{{ENV_INFLUX_BUCKET}}}",
                },
                "secureJsonData": {"token": f"${ENV_INFLUX_TOKEN}"},
                "editable": False,
            },
        ],
    }


def dashboards_provisioning() -> dict[str, Any]:
    """Grafana's dashboards.yaml content: one file provider per flavour, into folder "spike"."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": f"spike-{flavour}",
                "orgId": 1,
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "disableDeletion": False,
                # The files are generated; edits in the UI would be lost on the next export.
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": f"{PROVISIONED_DASHBOARDS_PATH}/{flavour}"},
            }
            for flavour in FLAVOURS
        ],
    }


_DATASOURCES_HEADER = f"""\
# Generated by `spike dashboards export`; do not edit, change loadorch/dashboards/ instead.
# Grafana file provisioning for spike's InfluxDB datasources. Grafana reads these
# environment variables when it starts; no secret is ever written in this file:
#   {ENV_INFLUX_URL}       InfluxDB URL, e.g. http://influxdb:8086
#   {ENV_INFLUX_DB} / {ENV_INFLUX_USER} / {ENV_INFLUX_PASSWORD}   1.x (InfluxQL)
#   {ENV_INFLUX_ORG} / {ENV_INFLUX_BUCKET} / {ENV_INFLUX_TOKEN}   2.x (Flux)
"""

_DASHBOARDS_HEADER = f"""\
# Generated by `spike dashboards export`; do not edit, change loadorch/dashboards/ instead.
# Grafana file provisioning for spike's dashboards: mount the generated
# dashboards/ folder at {PROVISIONED_DASHBOARDS_PATH}
# (for example: -v ./dashboards:{PROVISIONED_DASHBOARDS_PATH}:ro).
"""


def _yaml(header: str, data: dict[str, Any]) -> str:
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def render_files() -> dict[str, str]:
    """Every generated file, by path relative to the dashboards folder, with its exact text."""
    files: dict[str, str] = {}
    for flavour in FLAVOURS:
        for dashboard in dashboards(flavour):
            files[f"{flavour}/{dashboard['uid']}.json"] = normalised_json(dashboard)
    files["provisioning/dashboards.yaml"] = _yaml(_DASHBOARDS_HEADER, dashboards_provisioning())
    files["provisioning/datasources.yaml"] = _yaml(_DATASOURCES_HEADER, datasources_provisioning())
    return dict(sorted(files.items()))


def write_dashboards(out_dir: Path | str) -> list[Path]:
    """Write every dashboard (both flavours) and the provisioning YAML under `out_dir`.

    Returns the written paths. Files are only rewritten when their text
    changes, so an unchanged export touches nothing.
    """
    root = Path(out_dir)
    written: list[Path] = []
    for relative, text in render_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# -- macros, for running panel queries outside Grafana -------------------------------

# Grafana's regex escaping of variable values (its `regexEscape`), plus '/'
# which ends an InfluxQL regex literal.
_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VARIABLE_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_NICE_INTERVALS_MS = (
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
)


def _duration_ms(text: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not match:
        raise BadInputError(f"unsupported interval {text!r}; use e.g. 500ms, 1s, 5m, 1h")
    factor = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[match.group(2)]
    return int(match.group(1)) * factor


def _duration_text(ms: int) -> str:
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


def query_interval_ms(
    time_from_ms: int, time_to_ms: int, *, min_interval: str = WRITE_PERIOD, max_data_points: int = 1000
) -> int:
    """What Grafana's `$__interval` is for a range: range / points, rounded up to a round step.

    Grafana's own rounding picks slightly different steps; any of them is a
    valid GROUP BY time(), which is what matters for checking queries.
    """
    if time_to_ms <= time_from_ms:
        raise BadInputError(f"time range is empty: from {time_from_ms} ms to {time_to_ms} ms")
    raw = (time_to_ms - time_from_ms) / max(1, max_data_points)
    nice = next((step for step in _NICE_INTERVALS_MS if step >= raw), _NICE_INTERVALS_MS[-1])
    return max(nice, _duration_ms(min_interval))


def _regex_escape(value: str) -> str:
    return _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), value)


def _string_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _variable_value(
    definition: Mapping[str, Any], given: str | Sequence[str] | None, dashboard_uid: str
) -> str:
    name = definition["name"]
    kind = definition.get("type")
    if kind == "constant":
        return str(definition.get("query", ""))
    if given is None:
        current = definition.get("current") or {}
        given = current.get("value")
        if given is None or given == [] or given == "":
            raise BadInputError(
                f"dashboard {dashboard_uid}: no value for variable ${name}",
                fix=f"pass variables={{{name!r}: ...}}",
            )
    values = [given] if isinstance(given, str) else list(given)
    if definition.get("multi") or definition.get("includeAll"):
        if any(v in ("$__all", "All") for v in values) or not values:
            return str(definition.get("allValue") or ".*")
        escaped = [_regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if len(values) != 1:
        raise BadInputError(f"variable ${name} takes one value, got {values}")
    return _string_escape(values[0])


def _expander(
    dashboard: Mapping[str, Any],
    variables: Mapping[str, str | Sequence[str]],
    time_from_ms: int,
    time_to_ms: int,
    max_data_points: int,
) -> Any:
    if "flux" in dashboard.get("tags", []):
        raise BadInputError(
            f"dashboard {dashboard.get('uid')} is the Flux flavour; panel_queries expands InfluxQL only",
            fix="pass the InfluxQL dashboard (uid without -flux)",
        )
    uid = str(dashboard.get("uid"))
    definitions = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}

    def expand(query: str, min_interval: str) -> str:
        interval_ms = query_interval_ms(
            time_from_ms, time_to_ms, min_interval=min_interval, max_data_points=max_data_points
        )
        builtins = {
            # Exactly the condition Grafana's InfluxQL datasource writes.
            "timeFilter": f"time >= {time_from_ms}ms and time <= {time_to_ms}ms",
            "__interval": _duration_text(interval_ms),
            "__interval_ms": str(interval_ms),
            "__from": str(time_from_ms),
            "__to": str(time_to_ms),
        }

        def replace(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2) or match.group(3)
            if name in builtins:
                return builtins[name]
            if name in definitions:
                return _variable_value(definitions[name], variables.get(name), uid)
            raise BadInputError(f"dashboard {uid}: query uses unknown variable ${name}")

        return _VARIABLE_REF.sub(replace, query)

    return expand


def panel_queries(
    dashboard: Mapping[str, Any],
    variables: Mapping[str, str | Sequence[str]],
    time_from_ms: int,
    time_to_ms: int,
    *,
    max_data_points: int = 1000,
) -> list[tuple[str, str]]:
    """Every panel query of an InfluxQL dashboard as the concrete InfluxQL Grafana would send.

    `$timeFilter`, `$__interval`, `$__interval_ms`, `$__from`, `$__to` and the
    dashboard's variables are expanded the way Grafana's InfluxQL datasource
    does (multi-value variables regex-escaped, All as `.*`). A variable not in
    `variables` takes its default (All for region and request); one without a
    default (the run) must be given. Returns (panel title, query) pairs in
    panel order, one per query.
    """
    expand = _expander(dashboard, variables, time_from_ms, time_to_ms, max_data_points)
    out: list[tuple[str, str]] = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            out.append((panel["title"], expand(target["query"], panel.get("interval", WRITE_PERIOD))))
    return out


def template_queries(
    dashboard: Mapping[str, Any],
    variables: Mapping[str, str | Sequence[str]],
    time_from_ms: int,
    time_to_ms: int,
) -> list[tuple[str, str]]:
    """The variable and annotation queries of an InfluxQL dashboard, expanded like `panel_queries`."""
    expand = _expander(dashboard, variables, time_from_ms, time_to_ms, 1000)
    out: list[tuple[str, str]] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            out.append((f"variable {variable['name']}", expand(variable["query"], WRITE_PERIOD)))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "query" in annotation:
            out.append((f"annotation {annotation['name']}", expand(annotation["query"], WRITE_PERIOD)))
    return out
