"""`spike agent --config FILE`: the metrics agent that runs beside one Gatling injector.

Wire it with `app.command("agent")(agent.agent)`. It runs until SIGTERM or Ctrl-C, then drains
to the sink and exits 0; its status file says when it is listening and what it delivered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadorch.cli.common import handles_errors


@handles_errors
def agent(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="The agent's JSON settings: run_id, region, injector, listen_port, sink_settings, spool_dir, status_path.",
        ),
    ],
) -> None:
    """Receive an injector's Gatling metrics (Graphite, 127.0.0.1) and write them to InfluxDB."""
    # imported here: the agent pulls in asyncio and the InfluxDB client, which no other command needs
    from loadorch.agent.agent import run_agent

    code = run_agent(config)
    if code:
        raise typer.Exit(code)
