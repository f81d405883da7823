"""`spike dashboards export|push`: Grafana dashboards as code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import console, handles_errors
from loadorch.dashboards.build import DATASOURCE_UIDS, FOLDER_UID, write_dashboards
from loadorch.dashboards.grafana import (
    DEFAULT_TIMEOUT_S,
    ENV_GRAFANA_KEY,
    ENV_GRAFANA_KEY_FILE,
    DatasourceSettings,
    load_key,
    push,
)
from loadorch.dashboards.model import FLAVOURS, Flavour

app = typer.Typer(help="Export spike's Grafana dashboards, or push them to a Grafana.", no_args_is_help=True)


def _check_flavour(value: str) -> str:
    if value not in FLAVOURS:
        raise typer.BadParameter(f"unknown flavour {value!r}; valid values: {', '.join(FLAVOURS)}")
    return value


@app.command("export")
@handles_errors
def export(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write influxql/, flux/ and provisioning/ into.")
    ] = Path("dashboards"),
) -> None:
    """Write both dashboards in both flavours, and Grafana's provisioning YAML."""
    paths = write_dashboards(out)
    for path in paths:
        console.print(str(path), markup=False)
    console.print(f"[green]✓[/] {len(paths)} files in {out}")


@app.command("push")
@handles_errors
def push_command(
    grafana_url: Annotated[
        str, typer.Option("--grafana-url", envvar="SPIKE_GRAFANA_URL", help="e.g. http://127.0.0.1:3000")
    ],
    influx_url: Annotated[
        str,
        typer.Option("--influx-url", envvar="SPIKE_INFLUX_URL", help="InfluxDB URL as Grafana reaches it."),
    ] = "http://127.0.0.1:8086",
    flavour: Annotated[
        str,
        typer.Option(
            "--flavour",
            callback=_check_flavour,
            help="influxql (InfluxDB 1.x) or flux (InfluxDB 2.x).",
        ),
    ] = "influxql",
    influx_database: Annotated[
        str, typer.Option("--influx-database", envvar="SPIKE_INFLUX_DB", help="1.x database.")
    ] = "spike",
    influx_user: Annotated[
        str,
        typer.Option(
            "--influx-user", envvar="SPIKE_INFLUX_USER", help="1.x user (password: $SPIKE_INFLUX_PASSWORD)."
        ),
    ] = "",
    influx_org: Annotated[
        str, typer.Option("--influx-org", envvar="SPIKE_INFLUX_ORG", help="2.x organisation.")
    ] = "spike",
    influx_bucket: Annotated[
        str,
        typer.Option(
            "--influx-bucket", envvar="SPIKE_INFLUX_BUCKET", help="2.x bucket (token: $SPIKE_INFLUX_TOKEN)."
        ),
    ] = "spike",
    grafana_key_file: Annotated[
        Path | None,
        typer.Option(
            "--grafana-key-file",
            help=f"File holding the Grafana API key; default: ${ENV_GRAFANA_KEY}, then ${ENV_GRAFANA_KEY_FILE}.",
        ),
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each Grafana call.")] = (
        DEFAULT_TIMEOUT_S
    ),
) -> None:
    """Create or update spike's datasource, folder "spike" and dashboards in a Grafana."""
    key = load_key(grafana_key_file)
    chosen: Flavour = "flux" if flavour == "flux" else "influxql"
    influx = DatasourceSettings.from_env(
        influx_url, chosen, database=influx_database, user=influx_user, org=influx_org, bucket=influx_bucket
    )
    report = push(grafana_url, key, influx, timeout_s=timeout_s)
    table = Table("kind", "uid", "outcome")
    table.add_row("datasource", DATASOURCE_UIDS[chosen], report.datasource)
    table.add_row("folder", FOLDER_UID, report.folder)
    for uid, outcome in report.dashboards.items():
        table.add_row("dashboard", uid, outcome)
    console.print(table)
    console.print(f"[green]✓[/] Grafana at {report.grafana_url} holds spike's {chosen} dashboards")
