"""The terminal live view of a run, and the final summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loadorch.run.result import RunResult, ScopeLatency
from loadorch.run.settings import LiveView


class TerminalObserver:
    """Draws phases as lines and the live view as a table that redraws once a second.

    Without a terminal (CI, pipes) it prints one plain line every few seconds instead.
    """

    def __init__(self, console: Console, plain_every_s: float = 5.0) -> None:
        self.console = console
        self.live: Live | None = None
        self.plain_every_s = plain_every_s
        self._last_plain = -1e9

    def phase(self, name: str, detail: str = "") -> None:
        if name in ("collect", "teardown", "interrupted"):
            self.close()
        self.console.print(f"[bold cyan]{name:>10}[/] {detail}")

    def region_progress(self, region: str, event: str, detail: str) -> None:
        """A cloud provider's progress, one line per region and resource step (heartbeats, refreshes skipped)."""
        quiet = ("progress", "refresh_start", "refresh_complete", "planned_change", "outputs", "version")
        if event.endswith(quiet) or detail.startswith("data."):
            return
        self.console.print(f"[cyan]{region:>14}[/] {event}: {detail}", markup=True, highlight=False)

    def tick(self, view: LiveView) -> None:
        if self.console.is_terminal:
            if self.live is None:
                self.live = Live(console=self.console, refresh_per_second=4, transient=False)
                self.live.start()
            self.live.update(render_live(view))
        elif view.elapsed_s - self._last_plain >= self.plain_every_s:
            self._last_plain = view.elapsed_s
            self.console.print(plain_line(view), markup=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def render_live(view: LiveView) -> Group:
    remaining = max(0.0, view.duration_s - view.elapsed_s)
    header = Text(
        f"elapsed {view.elapsed_s:5.0f} s   remaining {remaining:5.0f} s   "
        f"injectors running {view.injectors_running}/{view.injectors_total}"
    )
    table = Table("region", "planned req/s", "achieved req/s", "requests", "errors", "p95 (worst injector)")
    for r in view.regions:
        table.add_row(
            r.name,
            f"{r.planned_requests_per_s:,.1f}",
            f"{r.achieved_requests_per_s:,.0f}",
            f"{r.requests:,}",
            f"[red]{r.ko:,}[/]" if r.ko else "0",
            "-" if r.p95_ms is None else f"{r.p95_ms} ms",
        )
    if not view.top_errors:
        return Group(header, table)
    errors = Table("error (so far)", "count")
    for item in view.top_errors:
        errors.add_row(escape(item.message), f"{item.count:,}")
    return Group(header, table, errors)


def plain_line(view: LiveView) -> str:
    parts = [f"t={view.elapsed_s:.0f}/{view.duration_s:.0f}s"]
    for r in view.regions:
        p95 = "-" if r.p95_ms is None else f"{r.p95_ms}ms"
        parts.append(
            f"{r.name}: {r.achieved_requests_per_s:.0f}/{r.planned_requests_per_s:.0f} req/s p95={p95} errors={r.ko}"
        )
    if view.top_errors:
        top = view.top_errors[0]
        parts.append(f"top error: {top.message} x{top.count}")
    return "  ".join(parts)


def _row(lat: ScopeLatency) -> list[int | None]:
    a = lat.all
    return [a.count, lat.ko.count, a.p50, a.p75, a.p95, a.p99, a.max]


def render_summary(result: RunResult) -> Group:
    """The end-of-run tables: percentiles per region and request, SLOs, errors by message."""
    parts: list[Any] = []
    lat = Table(
        "scope",
        "requests",
        "ko",
        "p50",
        "p75",
        "p95",
        "p99",
        "max",
        title="latency (ms, exact, all injectors)",
    )
    rows: list[tuple[str, ScopeLatency]] = []
    if result.latency is not None:
        rows.append(("all", result.latency))
    rows += [(f"region {name}", v) for name, v in sorted(result.by_region.items())]
    rows += [(f"request {name}", v) for name, v in sorted(result.by_request.items())]
    for scope, value in rows:
        lat.add_row(escape(scope), *["-" if v is None else f"{v:,}" for v in _row(value)])
    parts.append(lat)
    if result.slos:
        slos = Table("SLO", "threshold", "actual", "result", title="SLOs")
        for slo in result.slos:
            slos.add_row(
                escape(slo.name),
                str(slo.threshold),
                str(slo.actual),
                "[green]pass[/]" if slo.passed else "[red]FAIL[/]",
            )
        parts.append(slos)
    if result.errors:
        table = Table("error", "count", title="errors by message")
        for item in result.errors[:10]:
            table.add_row(escape(item.message), f"{item.count:,}")
        parts.append(table)
    if result.gates:
        table = Table("gate", "where", "what", "effect", title="validity gates")
        for gate in result.gates:
            effect = "[red]run invalid[/]" if gate.invalidates else "[yellow]warning[/]"
            table.add_row(gate.gate, escape(gate.where), escape(gate.detail), effect)
        parts.append(table)
    return Group(*parts)
