"""The vocabulary the dashboards are written in: queries, variables and panels.

A query is described once, by what it means (which measurement and fields,
which tag conditions, how points of several injectors combine), and rendered
into either query language: InfluxQL for InfluxDB 1.x and Flux for 2.x. So the
two flavours of each dashboard cannot disagree about what a panel shows.

Names come from `loadorch.metrics.schema`; the unit tests check every rendered
InfluxQL and Flux query mentions nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Flavour = Literal["influxql", "flux"]
FLAVOURS: tuple[Flavour, ...] = ("influxql", "flux")

# Gatling's Graphite writer (and so every injector) reports once a second; no
# panel can show anything finer, so it is the minimum interval of every panel.
WRITE_PERIOD = "1s"

# Summaries and events are scoped by run id, not by the time picker: a run that
# ended an hour ago must still show its results on a 15-minute live view.
_ALL_TIME_FLUX = "1970-01-01T00:00:00Z"


class Aggregation(StrEnum):
    """How the points of one series (one injector) combine into what a panel shows."""

    MEAN = "mean"
    """Mean per interval; for fields written once per second per series (planned_rate)."""
    MAX = "max"
    """Worst value per interval; percentiles of several injectors cannot be merged, so
    the honest live figure is the worst injector's (exact merged ones are in run_summary)."""
    RATE = "rate"
    """Per-second rate of a field that counts events per write period (gatling.count):
    summed across injectors per second, then averaged over the interval."""
    CUMULATIVE_RATE = "cumulative_rate"
    """Per-second growth of the sum of cumulative counters (gatling_users active + done
    = users started so far), so achieved arrivals compare with planned users/s."""
    SUM_OF_LAST = "sum_of_last"
    """A gauge per injector (active users): its last value per interval, summed."""
    LAST = "last"
    """Final values of a run: the last point per group, whatever the time picker says."""
    ROWS = "rows"
    """Points as table rows, newest first."""


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_influxql_string(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_flux_string(value: str) -> str:
    """A Flux double-quoted string literal (Grafana's `${var}` inside stays as written)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Match:
    """A tag condition on a fixed value: `tag = 'value'` (or `!=` when negated)."""

    tag: str
    value: str
    negate: bool = False

    def influxql(self) -> str:
        op = "!=" if self.negate else "="
        return f"{quote_ident(self.tag)} {op} {quote_influxql_string(self.value)}"

    def flux(self) -> str:
        op = "!=" if self.negate else "=="
        return f"r.{self.tag} {op} {quote_flux_string(self.value)}"


@dataclass(frozen=True)
class VarMatch:
    """A tag condition on a dashboard variable; multi-value variables match as a regex."""

    tag: str
    variable: str
    multi: bool = False

    def influxql(self) -> str:
        if self.multi:
            # Grafana expands a multi-value (or All) variable inside /.../ to an
            # escaped alternation, so anchors keep 'eu' from matching 'eu-west-2'.
            return f"{quote_ident(self.tag)} =~ /^${self.variable}$/"
        return f"{quote_ident(self.tag)} = '${self.variable}'"

    def flux(self) -> str:
        if self.multi:
            return f"r.{self.tag} =~ /^${{{self.variable}:regex}}$/"
        return f'r.{self.tag} == "${{{self.variable}}}"'


Condition = Match | VarMatch


@dataclass(frozen=True)
class Query:
    """One panel query, described by meaning and rendered into InfluxQL or Flux.

    `name` labels the single resulting series or column when the query reads
    several fields into one value (rates); otherwise each field keeps its name,
    so table columns and legends read the same in both flavours.
    """

    measurement: str
    fields: tuple[str, ...]
    aggregation: Aggregation
    where: tuple[Condition, ...] = ()
    group_by: tuple[str, ...] = ()
    name: str = ""
    columns: tuple[str, ...] = ()
    """ROWS only: tags shown as columns before the fields."""
    time_filtered: bool = True
    """ROWS only (LAST never is): restrict rows to the time picker's range."""
    per: str = "injector"
    """SUM_OF_LAST only: the tag that tells one writer's series from another's."""

    def __post_init__(self) -> None:
        single_valued = (Aggregation.RATE, Aggregation.CUMULATIVE_RATE, Aggregation.SUM_OF_LAST)
        if self.aggregation in single_valued and not self.name:
            raise ValueError(f"a {self.aggregation} query needs a name for its one series")
        if self.aggregation in (Aggregation.RATE, Aggregation.SUM_OF_LAST) and len(self.fields) != 1:
            raise ValueError(f"a {self.aggregation} query reads exactly one field")
        if not self.time_filtered and self.aggregation is not Aggregation.ROWS:
            raise ValueError("only a rows query may ignore the time picker (last never uses it)")
        if self.name and self.aggregation in (Aggregation.MEAN, Aggregation.MAX) and len(self.fields) != 1:
            raise ValueError("a named mean/max query reads exactly one field")

    @property
    def is_table(self) -> bool:
        return self.aggregation in (Aggregation.LAST, Aggregation.ROWS)

    @property
    def value_names(self) -> tuple[str, ...]:
        """The names of the values the query returns (series names or table columns)."""
        if self.name and not self.is_table:
            return (self.name,)
        return self.fields

    # -- InfluxQL ---------------------------------------------------------------

    def _influxql_where(self, time_filtered: bool) -> str:
        parts = [c.influxql() for c in self.where]
        if time_filtered:
            parts.append("$timeFilter")
        return " WHERE " + " AND ".join(parts) if parts else ""

    def _influxql_group(self, interval: str | None, extra: tuple[str, ...] = ()) -> str:
        keys = [f"time({interval})"] if interval else []
        keys += [quote_ident(t) for t in (*self.group_by, *extra)]
        return " GROUP BY " + ", ".join(keys) if keys else ""

    def _influxql_select(self, function: str, fields: tuple[str, ...], names: tuple[str, ...]) -> str:
        return ", ".join(
            f"{function}({quote_ident(f)}) AS {quote_ident(n)}" for f, n in zip(fields, names, strict=True)
        )

    def influxql(self) -> str:
        """The query as InfluxQL (1.x), with Grafana's `$timeFilter`, `$__interval` and `$var`s."""
        m = quote_ident(self.measurement)
        agg = self.aggregation
        if agg in (Aggregation.MEAN, Aggregation.MAX):
            names = (self.name,) if self.name else self.fields
            return (
                f"SELECT {self._influxql_select(agg.value, self.fields, names)} FROM {m}"
                f"{self._influxql_where(True)}{self._influxql_group('$__interval')} fill(null)"
            )
        if agg is Aggregation.RATE:
            # Each injector writes one count per second, so the per-second sum is
            # the rate; averaging those sums keeps it requests/s at any zoom.
            n = quote_ident(self.name)
            inner = (
                f"SELECT sum({quote_ident(self.fields[0])}) AS {n} FROM {m}"
                f"{self._influxql_where(True)}{self._influxql_group(WRITE_PERIOD)}"
            )
            return (
                f"SELECT mean({n}) AS {n} FROM ({inner}) WHERE $timeFilter"
                f"{self._influxql_group('$__interval')} fill(null)"
            )
        if agg is Aggregation.CUMULATIVE_RATE:
            n = quote_ident(self.name)
            total = " + ".join(f"sum({quote_ident(f)})" for f in self.fields)
            inner = (
                f"SELECT {total} AS {n} FROM {m}"
                f"{self._influxql_where(True)}{self._influxql_group(WRITE_PERIOD)}"
            )
            # derivative over interval-wide buckets with unit 1s is growth per second.
            return (
                f"SELECT non_negative_derivative(max({n}), 1s) AS {n} FROM ({inner}) WHERE $timeFilter"
                f"{self._influxql_group('$__interval')}"
            )
        if agg is Aggregation.SUM_OF_LAST:
            n = quote_ident(self.name)
            inner = (
                f"SELECT last({quote_ident(self.fields[0])}) AS {n} FROM {m}"
                f"{self._influxql_where(True)}{self._influxql_group('$__interval', (self.per,))}"
            )
            return (
                f"SELECT sum({n}) AS {n} FROM ({inner}) WHERE $timeFilter"
                f"{self._influxql_group('$__interval')} fill(null)"
            )
        if agg is Aggregation.LAST:
            return (
                f"SELECT {self._influxql_select('last', self.fields, self.fields)} FROM {m}"
                f"{self._influxql_where(False)}{self._influxql_group(None)}"
            )
        # ROWS: tags may be selected next to fields; InfluxQL needs at least one field.
        selected = ", ".join(quote_ident(c) for c in (*self.columns, *self.fields))
        return f"SELECT {selected} FROM {m}{self._influxql_where(self.time_filtered)} ORDER BY time DESC"

    # -- Flux -------------------------------------------------------------------

    def _flux_source(self, time_filtered: bool) -> list[str]:
        start = (
            "start: v.timeRangeStart, stop: v.timeRangeStop" if time_filtered else f"start: {_ALL_TIME_FLUX}"
        )
        lines = [
            'from(bucket: "${bucket}")',
            f"  |> range({start})",
            f"  |> filter(fn: (r) => r._measurement == {quote_flux_string(self.measurement)})",
        ]
        if self.where:
            lines.append(f"  |> filter(fn: (r) => {' and '.join(c.flux() for c in self.where)})")
        fields = " or ".join(f"r._field == {quote_flux_string(f)}" for f in self.fields)
        lines.append(f"  |> filter(fn: (r) => {fields})")
        return lines

    def _flux_columns(self, columns: tuple[str, ...]) -> str:
        return "[" + ", ".join(quote_flux_string(c) for c in columns) + "]"

    def _flux_named(self) -> list[str]:
        # One name for the one series, as a group-key column so Grafana labels it.
        return [
            f"  |> set(key: {quote_flux_string('_field')}, value: {quote_flux_string(self.name)})",
            f"  |> group(columns: {self._flux_columns((*self.group_by, '_field'))})",
        ]

    def flux(self) -> str:
        """The query as Flux (2.x), with Grafana's `v.timeRangeStart`, `v.windowPeriod` and `${var}`s."""
        agg = self.aggregation
        lines = self._flux_source(agg is not Aggregation.LAST and self.time_filtered)
        by_tags = self._flux_columns(self.group_by)
        window = "aggregateWindow(every: {every}, fn: {fn}, createEmpty: false)"
        if agg in (Aggregation.MEAN, Aggregation.MAX) and self.name:
            lines += [
                f"  |> group(columns: {by_tags})",
                "  |> " + window.format(every="v.windowPeriod", fn=agg.value),
                *self._flux_named(),
            ]
        elif agg in (Aggregation.MEAN, Aggregation.MAX):
            lines += [
                f"  |> group(columns: {self._flux_columns((*self.group_by, '_field'))})",
                "  |> " + window.format(every="v.windowPeriod", fn=agg.value),
            ]
        elif agg is Aggregation.RATE:
            lines += [
                f"  |> group(columns: {by_tags})",
                "  |> " + window.format(every=WRITE_PERIOD, fn="sum"),
                "  |> " + window.format(every="v.windowPeriod", fn="mean"),
                *self._flux_named(),
            ]
        elif agg is Aggregation.CUMULATIVE_RATE:
            lines += [
                f"  |> group(columns: {by_tags})",
                "  |> " + window.format(every=WRITE_PERIOD, fn="sum"),
                "  |> " + window.format(every="v.windowPeriod", fn="max"),
                "  |> derivative(unit: 1s, nonNegative: true)",
                *self._flux_named(),
            ]
        elif agg is Aggregation.SUM_OF_LAST:
            lines += [
                # Each raw series is one writer (injector): its last value per window...
                "  |> " + window.format(every="v.windowPeriod", fn="last"),
                f"  |> group(columns: {by_tags})",
                # ...then those aligned last values summed.
                "  |> " + window.format(every="v.windowPeriod", fn="sum"),
                *self._flux_named(),
            ]
        elif agg is Aggregation.LAST:
            lines += [
                "  |> last()",
                f"  |> group(columns: {by_tags})",
                f'  |> pivot(rowKey: {by_tags}, columnKey: ["_field"], valueColumn: "_value")',
                "  |> group()",
                f"  |> keep(columns: {self._flux_columns((*self.group_by, *self.fields))})",
                f"  |> sort(columns: {by_tags})",
            ]
        else:
            lines += [
                '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
                "  |> group()",
                f"  |> keep(columns: {self._flux_columns(('_time', *self.columns, *self.fields))})",
                '  |> sort(columns: ["_time"], desc: true)',
            ]
        return "\n".join(lines)

    def render(self, flavour: Flavour) -> str:
        return self.influxql() if flavour == "influxql" else self.flux()

    def influxql_alias(self) -> str:
        """Grafana's InfluxQL legend pattern: the grouping tags, then the column name."""
        return " ".join([*(f"$tag_{t}" for t in self.group_by), "$col"])


@dataclass(frozen=True)
class TagVariable:
    """A dashboard variable listing a tag's values, optionally filtered by other variables."""

    name: str
    label: str
    measurement: str
    tag: str
    where: tuple[Condition, ...] = ()
    multi: bool = False
    descending: bool = False
    """Sort values Z..A: run ids embed a UTC timestamp, so within a profile that is newest first."""
    description: str = ""

    def influxql(self) -> str:
        where = " WHERE " + " AND ".join(c.influxql() for c in self.where) if self.where else ""
        return (
            f"SHOW TAG VALUES FROM {quote_ident(self.measurement)} WITH KEY = {quote_ident(self.tag)}{where}"
        )

    def flux(self) -> str:
        predicate = " and ".join(
            [f"r._measurement == {quote_flux_string(self.measurement)}", *(c.flux() for c in self.where)]
        )
        return (
            'import "influxdata/influxdb/schema"\n'
            f'schema.tagValues(bucket: "${{bucket}}", tag: {quote_flux_string(self.tag)}, '
            f"predicate: (r) => {predicate}, start: {_ALL_TIME_FLUX})"
        )

    def render(self, flavour: Flavour) -> str:
        return self.influxql() if flavour == "influxql" else self.flux()


@dataclass(frozen=True)
class CustomVariable:
    """A variable with fixed options (for example which status latency is read for)."""

    name: str
    label: str
    options: tuple[str, ...]
    default: str
    description: str = ""


Variable = TagVariable | CustomVariable

PanelKind = Literal["timeseries", "table"]


@dataclass(frozen=True)
class Panel:
    """One panel: what it shows (queries) and how (kind, unit, size).

    `id` is written by hand, not counted, so inserting a panel never renumbers
    the others: links to `viewPanel=<id>` and diffs of the JSON stay stable.
    """

    id: int
    title: str
    kind: PanelKind
    queries: tuple[Query, ...]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    threshold: float | None = None
    """A red line at this value: the point where the thing plotted saturates."""
    max_value: float | None = None
    column_units: tuple[tuple[str, str], ...] = ()
    """Tables: (column, unit) pairs."""

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 24:
            raise ValueError(f"panel {self.title!r}: width must be 1..24 grid columns")
        if not self.queries:
            raise ValueError(f"panel {self.title!r} has no query")
        if len(self.queries) > 26:
            raise ValueError(f"panel {self.title!r}: at most 26 queries (refIds A..Z)")


@dataclass(frozen=True)
class RunEventsAnnotation:
    """Annotations drawn from the `run_events` measurement of the selected run."""

    name: str
    query: Query


@dataclass(frozen=True)
class Dashboard:
    """A whole dashboard as spike defines it, before rendering to a flavour."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...]
    time_from: str = "now-15m"
    refresh: str = ""
    annotations: tuple[RunEventsAnnotation, ...] = ()
    api_annotation_tags: tuple[str, ...] = ()
    """Tags of annotations spike posts through Grafana's API (run start/end) to show here."""
    tags: tuple[str, ...] = field(default=("spike",))

    def __post_init__(self) -> None:
        ids = [p.id for p in self.panels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"dashboard {self.uid}: panel ids must be unique, got {ids}")
        if not re.fullmatch(r"[a-z0-9-]{1,34}", self.uid):
            # Grafana allows 40 characters; keep room for the '-flux' suffix.
            raise ValueError(f"dashboard uid {self.uid!r}: use 1-34 of a-z, 0-9 and '-'")
