"""`spike target serve`: the bundled sample target, a small social feed on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadorch.cli.common import console, handles_errors
from loadorch.target.server import TargetConfig, serve_forever

app = typer.Typer(help="The bundled sample target.", no_args_is_help=True)


@app.command("serve")
@handles_errors
def serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port on loopback.")] = 8080,
    host: Annotated[
        str, typer.Option(help="Loopback address to bind (127.0.0.0/8 or ::1 only).")
    ] = "127.0.0.1",
    capacity: Annotated[
        int, typer.Option(min=1, help="Requests served at once (the concurrency limit).")
    ] = 8,
    service_time_ms: Annotated[float, typer.Option(min=0, help="Time each request holds its slot.")] = 20.0,
    queue_timeout_ms: Annotated[
        float, typer.Option(min=0, help="Wait for a slot longer than this and get a 503.")
    ] = 250.0,
    extra_latency_ms: Annotated[
        float, typer.Option(min=0, help="Deliberate slowdown on every limited request (regression drills).")
    ] = 0.0,
    posts: Annotated[int, typer.Option(min=1, help="Posts with ids 1..N exist.")] = 500,
    access_log: Annotated[
        Path | None,
        typer.Option(
            help="Append every request here in the combined log format (what `spike replay import` reads)."
        ),
    ] = None,
) -> None:
    """Serve a social feed (feed, post, like, create) with bounded capacity until Ctrl-C."""
    config = TargetConfig(
        host=host,
        port=port,
        capacity=capacity,
        service_time_ms=service_time_ms,
        queue_timeout_ms=queue_timeout_ms,
        extra_latency_ms=extra_latency_ms,
        posts=posts,
        access_log=str(access_log) if access_log else None,
    )

    def ready(url: str) -> None:
        console.print(
            f"sample target on {url} (capacity {capacity} concurrent, {service_time_ms:g} ms service time, "
            f"~{capacity / max(service_time_ms, 0.001) * 1000:,.0f} req/s); Ctrl-C stops it"
        )

    serve_forever(config, on_ready=ready)
