"""Grafana as code: spike's dashboards defined once in Python, in two InfluxDB flavours.

`build` holds the definition and renders Grafana JSON and provisioning YAML;
`grafana` pushes them to a running Grafana and posts run annotations.
"""

from loadorch.dashboards.build import (
    DASHBOARDS,
    DATASOURCE_UIDS,
    FOLDER_UID,
    LIVE_RUN,
    RUNS,
    dashboard_json,
    dashboards,
    panel_queries,
    render_files,
    template_queries,
    write_dashboards,
)
from loadorch.dashboards.model import FLAVOURS, Flavour

__all__ = [
    "DASHBOARDS",
    "DATASOURCE_UIDS",
    "FLAVOURS",
    "FOLDER_UID",
    "LIVE_RUN",
    "RUNS",
    "Flavour",
    "dashboard_json",
    "dashboards",
    "panel_queries",
    "render_files",
    "template_queries",
    "write_dashboards",
]
