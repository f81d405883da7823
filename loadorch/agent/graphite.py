"""Gatling's Graphite plaintext lines -> spike's InfluxDB points (pure: no I/O, no clock).

What Gatling 3.11.5 sends (verified against its source and a real run), one line per metric:

    <prefix>.<simulation>.<request path>.<ok|ko|all>.<count|min|max|mean|stdDev|percentilesNN> <value> <epoch s>
    <prefix>.<simulation>.users.<scenario|allUsers>.<active|waiting|done> <value> <epoch s>

- `<request path>` is `allRequests` or the request name, preceded by its group names (outermost
  first) when the request sits in groups. Gatling sanitizes every name it puts in a path: a space
  becomes `_`, and `.` and `\\` become `-` (`sanitize_name` mirrors that), so the segments
  themselves never contain dots. spike's `request` tag is the request path joined with `.`.
- Every metric of one path arrives contiguously and in a fixed order within one flush; a status
  without a response in the period is sent as `count 0` alone.
- `count` is the number of responses since the previous flush: Gatling resets its histograms on
  every flush (each `writePeriod`, plus one final flush when the run stops).
- The timestamp is the flush time in whole seconds. Two flushes can share a second (seen in real
  runs: the final flush right after the last periodic one, and a delayed periodic flush caught up
  at the start of a run). InfluxDB would keep only the later of two points with the same series
  and timestamp, losing a `count`, so `TimestampSequencer` makes timestamps strictly increasing
  per series by adding milliseconds.

`GraphiteDecoder` turns the byte stream of one connection into complete line-protocol lines,
one per (simulation, request, status, second) with all its fields, never raising on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from loadorch.metrics.schema import (
    GATLING,
    GATLING_FIELDS,
    GATLING_USERS,
    GRAPHITE_METRIC_FIELDS,
    GRAPHITE_PREFIX,
    USERS_FIELDS,
    escape_measurement,
    escape_tag,
)

STATUSES = frozenset({"ok", "ko", "all"})
USERS_SEGMENT = "users"
ALL_REQUESTS = "allRequests"
ALL_USERS = "allUsers"
# A Graphite line is ~80 bytes; anything far longer is garbage, not a metric, and must not be
# allowed to grow the buffer without bound while we wait for its newline.
MAX_LINE_BYTES = 8192
# Distinct paths are few (requests x 3 statuses x 9 metrics); the bound only stops a client that
# sends endless distinct garbage paths from growing the cache.
MAX_CACHED_PATHS = 50_000


def gatling_graphite_properties(
    port: int, *, host: str = "127.0.0.1", prefix: str = GRAPHITE_PREFIX, write_period_s: int = 1
) -> dict[str, str]:
    """The -D system properties that make a Gatling 3.11.5 injector send its metrics to the agent.

    `gatling.data.writers` is a HOCON list, and a system property can only replace a list element
    by index: `-Dgatling.data.writers=console,file,graphite` makes Gatling fail at start-up with
    "gatling.data.writers has type STRING rather than LIST". The file writer must stay: spike's
    exact statistics come from simulation.log.
    """
    return {
        "gatling.data.writers.0": "console",
        "gatling.data.writers.1": "file",
        "gatling.data.writers.2": "graphite",
        "gatling.data.graphite.host": host,
        "gatling.data.graphite.port": str(port),
        "gatling.data.graphite.protocol": "tcp",
        "gatling.data.graphite.rootPathPrefix": prefix,
        "gatling.data.graphite.writePeriod": str(write_period_s),
    }


class GraphiteLineError(ValueError):
    """A line that is not a Gatling Graphite metric; the message says why."""


def sanitize_name(name: str) -> str:
    """Gatling's own sanitizing of a name inside a Graphite path (io.gatling.graphite.GraphitePath)."""
    return name.replace(" ", "_").replace(".", "-").replace("\\", "-")


class GraphiteSample(NamedTuple):
    """One parsed Graphite line."""

    measurement: str  # GATLING or GATLING_USERS
    simulation: str
    name: str  # request path (GATLING) or scenario (GATLING_USERS)
    status: str  # ok | ko | all; "" for GATLING_USERS
    field: str  # spike field name (schema), e.g. "count", "p95", "active"
    value: float
    epoch_s: int


class _PathInfo(NamedTuple):
    series: tuple[str, str, str, str]  # measurement, simulation, name, status
    field: str


_USERS_FIELDS = frozenset(USERS_FIELDS)


def _parse_path(path: str, prefix: str) -> _PathInfo:
    head = prefix + "."
    if not path.startswith(head):
        raise GraphiteLineError(f"path does not start with the prefix {prefix!r}")
    segments = path[len(head) :].split(".")
    last = segments[-1]
    if last in _USERS_FIELDS:
        if len(segments) != 4 or segments[1] != USERS_SEGMENT or not segments[0] or not segments[2]:
            raise GraphiteLineError("a users metric must be <simulation>.users.<scenario>.<progress>")
        return _PathInfo((GATLING_USERS, segments[0], segments[2], ""), last)
    spike_field = GRAPHITE_METRIC_FIELDS.get(last)
    if spike_field is None:
        raise GraphiteLineError(f"unknown metric {last!r}")
    if len(segments) < 4 or segments[-2] not in STATUSES or not all(segments[:-2]):
        raise GraphiteLineError("a request metric must be <simulation>.<request>.<ok|ko|all>.<metric>")
    return _PathInfo((GATLING, segments[0], ".".join(segments[1:-2]), segments[-2]), spike_field)


def _parse_epoch(text: str) -> int:
    try:
        epoch = int(text)
    except ValueError:
        epoch = int(float(text))  # Graphite allows fractional seconds; Gatling sends whole ones
    if epoch <= 0:
        raise GraphiteLineError(f"timestamp {text!r} is not a positive epoch second")
    return epoch


def _parse_value(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise GraphiteLineError(f"value {text!r} is not finite (line protocol cannot store it)")
    return value


def parse_line(text: str, prefix: str = GRAPHITE_PREFIX) -> GraphiteSample:
    """Parse one Graphite plaintext line (without its newline); raises GraphiteLineError."""
    parts = text.split()
    if len(parts) != 3:
        raise GraphiteLineError(f"expected '<path> <value> <timestamp>', got {len(parts)} fields")
    path, value_text, epoch_text = parts
    info = _parse_path(path, prefix)
    try:
        value = _parse_value(value_text)
        epoch = _parse_epoch(epoch_text)
    except ValueError as exc:
        raise GraphiteLineError(str(exc)) from None
    measurement, simulation, name, status = info.series
    return GraphiteSample(measurement, simulation, name, status, info.field, value, epoch)


def series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """`measurement,tag=value,...` exactly as `schema.line` writes it (sorted tags, empty ones left out)."""
    tag_text = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v != "")
    return escape_measurement(measurement) + tag_text


class TimestampSequencer:
    """Strictly increasing millisecond timestamps per series, shared by all connections.

    Two Gatling flushes in the same second (the final flush right after the last periodic one,
    or a periodic flush delayed by a pause) would otherwise produce two points with identical
    series and timestamp, and InfluxDB keeps only the last. Moving the later one by a millisecond
    keeps both, so sums of `count` stay exact.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, series: str, ts_ms: int) -> int:
        last = self._last.get(series)
        if last is not None and ts_ms <= last:
            ts_ms = last + 1
        self._last[series] = ts_ms
        return ts_ms


@dataclass
class _Open:
    """The point being assembled: its series, second and the fields seen so far (arrival order)."""

    series: str
    epoch_s: int
    complete_at: int  # how many fields make it complete
    fields: dict[str, float] = field(default_factory=dict)


class GraphiteDecoder:
    """Decodes the Graphite byte stream of ONE connection into line-protocol lines.

    Lines of one path and second are grouped into one point. A point is emitted as soon as it is
    complete (all fields, or a lone `count 0`), when a line of another path or second arrives,
    or when the caller says the stream is quiet (`close_open_point`) or finished (`finish`).
    Bad lines are counted in `malformed`, never raised.
    """

    def __init__(
        self,
        tags: Mapping[str, str],
        *,
        prefix: str = GRAPHITE_PREFIX,
        sequencer: TimestampSequencer | None = None,
    ) -> None:
        """`tags`: the tags every point of this agent carries (run_id, region, injector)."""
        self._tags = dict(tags)
        self._prefix = prefix
        self._sequencer = sequencer or TimestampSequencer()
        self._paths: dict[str, tuple[str, str, int] | None] = {}
        self._partial = b""
        self._open: _Open | None = None
        self.lines = 0
        self.malformed = 0
        self.last_malformed: str | None = None

    # -- input -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[str]:
        """Consume bytes as they arrive (any split); return the points completed by them."""
        out: list[str] = []
        if not data:
            return out
        buffer = self._partial + data if self._partial else data
        end = buffer.rfind(b"\n")
        if end < 0:
            self._partial = buffer
            if len(buffer) > MAX_LINE_BYTES:
                self._malformed(buffer[:80].decode("utf-8", "replace"), "line too long")
                self._partial = b""
            return out
        self._partial = buffer[end + 1 :]
        if len(self._partial) > MAX_LINE_BYTES:
            self._malformed(self._partial[:80].decode("utf-8", "replace"), "line too long")
            self._partial = b""
        chunk = buffer[:end]
        try:
            texts = chunk.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            texts = []
            for raw in chunk.split(b"\n"):
                try:
                    texts.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    self.lines += 1
                    self._malformed(raw[:80].decode("utf-8", "replace"), "not UTF-8")
        for text in texts:
            self._line(text, out)
        return out

    def finish(self) -> list[str]:
        """End of stream: a trailing line without newline was cut off, so it is counted, not used."""
        if self._partial.strip():
            self.lines += 1
            self._malformed(self._partial[:80].decode("utf-8", "replace"), "no newline before end of stream")
        self._partial = b""
        return self.close_open_point()

    def close_open_point(self) -> list[str]:
        """Emit the point being assembled, if any (the stream went quiet or is ending)."""
        out: list[str] = []
        self._emit(out)
        return out

    @property
    def has_open_point(self) -> bool:
        return self._open is not None

    # -- the hot path ------------------------------------------------------------------------

    def _line(self, text: str, out: list[str]) -> None:
        parts = text.split()
        if not parts:
            return  # blank lines are harmless (some clients send a trailing one)
        self.lines += 1
        if len(parts) != 3:
            self._malformed(text, "expected '<path> <value> <timestamp>'")
            return
        path, value_text, epoch_text = parts
        try:
            info = self._paths[path]
        except KeyError:
            info = self._learn(path)
        if info is None:
            self._malformed(text, "not a Gatling metric path")
            return
        series, name, complete_at = info
        try:
            value = float(value_text)
            epoch = int(epoch_text) if epoch_text.isdigit() else _parse_epoch(epoch_text)
        except ValueError:
            self._malformed(text, "value or timestamp is not a number")
            return
        if not math.isfinite(value) or epoch <= 0:
            self._malformed(text, "value not finite or timestamp not positive")
            return
        current = self._open
        if current is None or current.series != series or current.epoch_s != epoch or name in current.fields:
            # a new path, a new second, or the same field again (a new flush in the same second)
            if current is not None:
                self._emit(out)
            current = self._open = _Open(series, epoch, complete_at)
        current.fields[name] = value
        if len(current.fields) >= current.complete_at or (name == "count" and value == 0.0):
            self._emit(out)

    def _learn(self, path: str) -> tuple[str, str, int] | None:
        """Classify a path once; later lines with the same path are a dict lookup."""
        try:
            info = _parse_path(path, self._prefix)
        except GraphiteLineError:
            result = None
        else:
            measurement, simulation, name, status = info.series
            tags = {**self._tags, "simulation": simulation}
            if measurement == GATLING:
                tags["request"] = name
                tags["status"] = status
                complete_at = len(GATLING_FIELDS)
            else:
                tags["scenario"] = name
                complete_at = len(USERS_FIELDS)
            result = (series_prefix(measurement, tags), info.field, complete_at)
        if len(self._paths) >= MAX_CACHED_PATHS:
            self._paths.clear()
        self._paths[path] = result
        return result

    def _emit(self, out: list[str]) -> None:
        current = self._open
        if current is None:
            return
        self._open = None
        ts_ms = self._sequencer.next(current.series, current.epoch_s * 1000)
        # repr(float) is what schema.field_value writes: one field type (float) in InfluxDB
        fields = ",".join([f"{k}={v!r}" for k, v in current.fields.items()])
        out.append(f"{current.series} {fields} {ts_ms}")

    def _malformed(self, text: str, why: str) -> None:
        self.malformed += 1
        self.last_malformed = f"{why}: {text[:120]!r}"
