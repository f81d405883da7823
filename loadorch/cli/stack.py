"""`spike stack up|down|status`: the local InfluxDB that receives live metrics."""

from __future__ import annotations

from typing import Annotated

import typer

from loadorch.cli.common import console, handles_errors
from loadorch.metrics.stack import (
    DEFAULT_PORT,
    DEFAULT_RPC_PORT,
    StackStatus,
    stack_down,
    stack_status,
    stack_up,
)

app = typer.Typer(
    help="The local metrics stack: Debian's InfluxDB 1.6.7 on 127.0.0.1, run by spike.",
    no_args_is_help=True,
)


def _show(status: StackStatus) -> None:
    colour = "green" if status.running else "yellow"
    console.print(f"[{colour}]influxdb[/]: {status.note}")
    for label, value in status.lines():
        console.print(f"  {label:<8} {value}", markup=False)


@app.command("up")
@handles_errors
def up(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port on 127.0.0.1.")] = DEFAULT_PORT,
    rpc_port: Annotated[
        int, typer.Option(min=1, max=65535, help="InfluxDB's backup/restore RPC port on 127.0.0.1.")
    ] = DEFAULT_RPC_PORT,
) -> None:
    """Start InfluxDB in the background (if it is not running) and create the `spike` database."""
    _show(stack_up(port=port, rpc_port=rpc_port))


@app.command("down")
@handles_errors
def down() -> None:
    """Stop the stack's InfluxDB; its data stays for the next `up`."""
    _show(stack_down())


@app.command("status")
@handles_errors
def status() -> None:
    """Say whether the stack's InfluxDB runs, where, and which version."""
    _show(stack_status())
