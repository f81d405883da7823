"""`spike replay import|show`: a recorded spike becomes a profile; its curve against the recording."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadorch.cli.common import console, handles_errors, parse_regions
from loadorch.curve import RateCurve
from loadorch.errors import BadInputError
from loadorch.plan.planner import chart
from loadorch.plan.shapes import profile_curve
from loadorch.profiles.loader import load_profile
from loadorch.profiles.model import ReplayShape
from loadorch.replay.fidelity import read_recorded, replay_fidelity

app = typer.Typer(help="Replay recorded spikes: import a recording as a profile, compare curves.")


def parse_window(text: str | None) -> tuple[int | None, int | None] | None:
    """`FROM..TO` (ISO 8601 or epoch seconds; either side may be empty) as epoch ms."""
    if not text:
        return None
    if ".." not in text:
        raise BadInputError(
            f"--window {text!r} is not FROM..TO",
            fix="e.g. --window 2026-11-20T18:00:00Z..2026-11-20T19:30:00Z",
        )
    start, _, end = text.partition("..")
    return _instant(start), _instant(end)


def _instant(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise BadInputError(
            f"--window: {text!r} is neither ISO 8601 nor epoch seconds", fix="e.g. 2026-11-20T18:00:00Z"
        ) from None


@app.command("import")
@handles_errors
def import_(
    name: Annotated[str, typer.Option(help="The new profile's name.")],
    source: Annotated[
        Path | None,
        typer.Argument(
            help="An access log (nginx/Apache combined, ALB, .gz too), a CSV (timestamp,count[,path]) or a "
            "spike run directory; omit it with --influx-url and --query."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the profile and its files are written.")] = Path("."),
    fmt: Annotated[
        str | None, typer.Option("--format", help="combined, alb, csv or spike-run (default: detected).")
    ] = None,
    base_url: Annotated[str, typer.Option(help="The target the profile aims at.")] = "http://127.0.0.1:8080",
    regions: Annotated[
        str | None, typer.Option(help="Comma-separated region labels for the profile.")
    ] = None,
    max_rate_per_injector: Annotated[float, typer.Option(min=1, help="Injector capacity (users/s).")] = 500.0,
    scale: Annotated[float, typer.Option(min=0.001, help="Replay this many times the recorded rate.")] = 1.0,
    speedup: Annotated[float, typer.Option(min=0.001, help="Replay this many times faster.")] = 1.0,
    peak_rate: Annotated[
        float | None, typer.Option(min=0.001, help="Scale so the replayed peak is this many users/s.")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Only FROM..TO of the recording (ISO 8601 or epoch s).")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Keep the N most requested path templates.")] = 20,
    influx_url: Annotated[str | None, typer.Option(help="Read the recording from this InfluxDB.")] = None,
    query: Annotated[
        str | None, typer.Option(help="With --influx-url: a query returning one series of request counts.")
    ] = None,
    language: Annotated[str, typer.Option(help="The query's language: influxql or flux.")] = "influxql",
    influx_db: Annotated[str | None, typer.Option(help="InfluxQL: the database.")] = None,
    influx_org: Annotated[
        str | None, typer.Option(help="Flux: the organisation (token: $SPIKE_INFLUX_TOKEN).")
    ] = None,
    values_are: Annotated[
        str, typer.Option(help="The series' values: count (requests per interval) or rate (per second).")
    ] = "count",
    query_values: Annotated[
        str,
        typer.Option(
            help="Non-sensitive query values: placeholder (a feeder), literal, or drop. "
            "Sensitive-looking ones are always dropped."
        ),
    ] = "placeholder",
) -> None:
    """Turn a recorded spike into a profile that reproduces its curve and its request mix."""
    from loadorch.replay.importer import ImportOptions, InfluxQuery, import_recording

    if query_values not in ("placeholder", "literal", "drop"):
        raise typer.BadParameter("valid values: placeholder, literal, drop", param_hint="--query-values")
    if language not in ("influxql", "flux") or values_are not in ("count", "rate"):
        raise typer.BadParameter("--language: influxql or flux; --values-are: count or rate")
    recording: Path | InfluxQuery
    if influx_url is not None or query is not None:
        if influx_url is None or query is None or source is not None:
            raise BadInputError(
                "an InfluxDB recording needs --influx-url and --query, and no SOURCE file",
                fix="e.g. --influx-url http://127.0.0.1:8086 --influx-db prod --query 'SELECT sum(count) ...'",
            )
        recording = InfluxQuery(influx_url, query, language, influx_db, influx_org, values_are)  # type: ignore[arg-type]
    elif source is None:
        raise BadInputError("give a recording: a SOURCE file or directory, or --influx-url with --query")
    else:
        recording = source
    result = import_recording(
        recording,
        out,
        ImportOptions(
            name=name,
            fmt=fmt,
            base_url=base_url,
            regions=parse_regions(regions) or ("local",),
            max_rate_per_s=max_rate_per_injector,
            scale=scale,
            speedup=speedup,
            peak_rate=peak_rate,
            window=parse_window(window),
            top_n=top,
            query_values=query_values,  # type: ignore[arg-type]
        ),
    )
    stats, fit = result.stats, result.fit
    console.print(
        f"read {stats.lines:,} lines: {stats.parsed:,} parsed, {stats.malformed:,} malformed"
        + (f" (first at line {stats.first_malformed[0]})" if stats.first_malformed else "")
    )
    console.print(
        f"recording: {result.counts.total:,} arrivals over {len(result.counts.counts):,} s; curve: "
        f"{fit['segments']} segments, total error {fit['total_error']:.2%}, worst minute "
        f"{fit['worst_minute_error']:.2%}, correlation {fit['correlation']}"
    )
    if result.mix is not None:
        table = Table("request", "method", "path template", "share", "statuses")
        for t in result.mix.templates:
            statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(t.statuses.items()))
            table.add_row(t.name, t.method, t.path_template, f"{t.weight:.1%}", statuses)
        console.print(table)
        console.print(
            f"templates outside the top {top}: {result.mix.dropped_share:.1%} of requests (dropped); "
            f"sensitive query values dropped: {result.mix.sensitive_dropped:,}"
        )
    console.print(f"profile: {result.profile_path} (scale {result.scale:g}, speedup {speedup:g})")
    console.print(
        f"next: spike plan --profile {result.profile_path}; spike replay show {result.profile_path}"
    )


@app.command("show")
@handles_errors
def show(
    profile: Annotated[str, typer.Argument(help="A replay profile (from `spike replay import`).")],
) -> None:
    """Chart the recorded curve against the profile's curve, with how closely they agree."""
    loaded = load_profile(profile)
    shape = loaded.profile.shape
    if not isinstance(shape, ReplayShape):
        raise BadInputError(
            f"profile {loaded.profile.name!r} is not a replay", fix="give a profile with shape kind replay"
        )
    curve = profile_curve(loaded.profile)
    console.print(f"[bold]{loaded.profile.name}[/]: the profile's curve ({len(curve.points)} points)")
    for line in chart(curve):
        console.print(line, markup=False)
    if shape.recorded_file is None:
        console.print("no recording (recorded_file) to compare with")
        return
    recorded = read_recorded(
        loaded.source.parent / shape.recorded_file, scale=shape.scale, speedup=shape.speedup
    )
    as_curve = RateCurve.from_points(
        [(i, r) for i, r in enumerate(recorded)] + [(len(recorded), recorded[-1])]
    )
    console.print("the recording, on the same timeline")
    for line in chart(as_curve):
        console.print(line, markup=False)
    planned = curve.users_per_second()
    fidelity = replay_fidelity(recorded, planned, min_rate=1.0)
    console.print(
        f"profile vs recording: MAPE {fidelity['mape_pct']} % over {fidelity['seconds_in_mape']} s "
        f"with at least 1 user/s, correlation {fidelity['correlation']}"
    )
