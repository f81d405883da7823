"""Recorded traffic sources for `spike replay import`: access logs, CSV, an earlier run, InfluxDB.

Every source becomes a stream of `Hit`s (one request, or `count` requests in one second for
count-based sources such as CSV and InfluxDB series: `requests`). Files are read line by line and never
held whole: a 10-million-line access log streams through in constant memory.

Parsers take an iterable of lines and a `ReadStats` they update; `read_hits(path)` adds the
file handling (gzip by magic bytes, format detection) and the malformed-line policy: an empty
file or one without a single parsable line is a `BadInputError` naming the file and its first
bad line; more malformed lines than `max_malformed_share` (default 1%) is fatal, fewer are
counted in the stats for the caller to report.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import io
import json
import math
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from loadorch.errors import BadInputError, InfrastructureError
from loadorch.metrics.influx import run_query
from loadorch.metrics.sink import SinkUnavailable
from loadorch.run.layout import RunLayout

FORMATS = ("combined", "alb", "csv", "spike-run")
DEFAULT_MAX_MALFORMED_SHARE = 0.01
TOKEN_ENV = "SPIKE_INFLUX_TOKEN"
_GZIP_MAGIC = b"\x1f\x8b"
_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
_ALB_TYPES = frozenset({"http", "https", "h2", "grpcs", "ws", "wss"})
_CACHE_LIMIT = 200_000


class Hit(NamedTuple):
    """One recorded request: epoch ms, method, path with its query string, HTTP status.

    Count-based sources (CSV, InfluxDB series) carry several requests in one record: `requests`.
    Status 0 means unknown.
    """

    ts_ms: int
    method: str
    path: str
    status: int
    requests: int = 1


@dataclass
class ReadStats:
    """What a parser saw: lines read, records parsed, malformed lines and the first of them."""

    lines: int = 0
    parsed: int = 0
    malformed: int = 0
    first_malformed: tuple[int, str] | None = None

    def bad(self, text: str) -> None:
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = (self.lines, text.rstrip("\r\n")[:300])

    @property
    def malformed_share(self) -> float:
        return self.malformed / self.lines if self.lines else 0.0


@dataclass(frozen=True)
class SecondCounts:
    """Requests (or arrivals) per whole second from `start_ms`: counts[i] covers [start + i s, +1 s)."""

    start_ms: int
    counts: array[int] = field(repr=False)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return len(self.counts)


# ---------------------------------------------------------------- time parsing


def _combined_time_ms(text: str) -> int:
    """`10/Oct/2026:13:55:36 +0000` -> epoch ms (the offset is honoured)."""
    day, month, year = int(text[0:2]), _MONTHS[text[3:6]], int(text[7:11])
    hour, minute, second = int(text[12:14]), int(text[15:17]), int(text[18:20])
    if text[11] != ":" or text[20] != " ":
        raise ValueError(text)
    sign = text[21]
    if sign not in "+-":
        raise ValueError(text)
    offset_min = int(text[22:24]) * 60 + int(text[24:26])
    offset_s = (offset_min if sign == "+" else -offset_min) * 60
    epoch = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(text)
    return (epoch - offset_s) * 1000


def _iso_seconds(text: str) -> int:
    """`2026-10-10T13:55:36` (UTC) -> epoch seconds."""
    if text[4] != "-" or text[10] != "T" or text[13] != ":":
        raise ValueError(text)
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    return calendar.timegm((year, month, day, int(text[11:13]), int(text[14:16]), int(text[17:19]), 0, 0, 0))


def parse_timestamp_ms(text: str) -> int:
    """Epoch seconds or ms (numbers; >= 1e11 is ms) or ISO 8601 (no offset means UTC) -> epoch ms."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError(text)
        return round(number) if number >= 1e11 else round(number * 1000)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return round(calendar.timegm(moment.timetuple()) * 1000 + moment.microsecond / 1000)
    return round(moment.timestamp() * 1000)


# ---------------------------------------------------------------- line parsers


def parse_combined(lines: Iterable[str], stats: ReadStats) -> Iterator[Hit]:
    """nginx/Apache combined (or common) log format; the `[time]` offset is honoured.

    Hand-written slicing rather than one big regex: this is the hot loop for 10M-line logs,
    and the epoch of each distinct second string is computed once.
    """
    cache: dict[str, int] = {}
    for line in lines:
        stats.lines += 1
        try:
            lb = line.index("[")
            stamp = line[lb + 1 : lb + 27]
            ms = cache.get(stamp)
            if ms is None:
                if line[lb + 27] != "]":
                    raise ValueError(stamp)
                if len(cache) > _CACHE_LIMIT:
                    cache.clear()
                ms = cache[stamp] = _combined_time_ms(stamp)
            q1 = line.index('"', lb + 28)
            q2 = line.index('" ', q1 + 1)
            method, _, rest = line[q1 + 1 : q2].partition(" ")
            path = rest.rpartition(" ")[0] if " HTTP/" in rest else rest
            status = int(line[q2 + 2 : q2 + 5])
            if not method or not path or line[q2 + 5 : q2 + 6] not in (" ", "\n", ""):
                raise ValueError(line)
        except (ValueError, KeyError, IndexError):
            if line.strip():
                stats.bad(line)
            else:
                stats.lines -= 1  # blank lines are not records
            continue
        stats.parsed += 1
        yield Hit(ms, method, path, status)


def _url_path(url: str) -> str:
    """`https://host:443/p?x=1` -> `/p?x=1`; a bare path stays as it is."""
    if url.startswith("/"):
        return url
    scheme_end = url.find("://")
    if scheme_end < 0:
        raise ValueError(url)
    slash = url.find("/", scheme_end + 3)
    return url[slash:] if slash >= 0 else "/"


def parse_alb(lines: Iterable[str], stats: ReadStats) -> Iterator[Hit]:
    """AWS Application Load Balancer access log entries (field 2: time, 9: elb_status_code, 13: request)."""
    cache: dict[str, int] = {}
    for line in lines:
        stats.lines += 1
        try:
            parts = line.split(" ", 12)
            if parts[0] not in _ALB_TYPES:
                raise ValueError(line)
            stamp = parts[1]
            second = stamp[:19]
            base = cache.get(second)
            if base is None:
                if len(cache) > _CACHE_LIMIT:
                    cache.clear()
                base = cache[second] = _iso_seconds(second) * 1000
            frac = stamp[20:].rstrip("Z")[:3] if stamp[19:20] == "." else ""
            ms = base + (int(frac.ljust(3, "0")) if frac else 0)
            code = parts[8]
            status = 0 if code == "-" else int(code)
            rest = parts[12]
            if rest[0] != '"':
                raise ValueError(line)
            end = rest.index('"', 1)
            method, _, target = rest[1:end].partition(" ")
            url = target.rpartition(" ")[0] if " HTTP/" in target else target
            if method == "-" or not url:
                raise ValueError(line)
            path = _url_path(url)
        except (ValueError, IndexError):
            if line.strip():
                stats.bad(line)
            else:
                stats.lines -= 1
            continue
        stats.parsed += 1
        yield Hit(ms, method, path, status)


def spread_counts(points: Iterable[tuple[int, float, str]], *, where: str) -> Iterator[Hit]:
    """Time-ordered (ts_ms, count, path) rows -> per-second Hits, each row spread over its interval.

    A row's interval runs to the next distinct timestamp, but at most the smallest step seen
    so far (a gap in the data is a gap, not a slow trickle); the last group uses that step.
    Rows with equal timestamps (one per path) share the interval. Integer counts are spread
    exactly (remainders to the first seconds); fractional values are rounded per second with the
    carry kept, so totals survive.
    """
    group: list[tuple[int, float, str]] = []
    step_ms: int | None = None
    carry = 0.0

    def emit(rows: list[tuple[int, float, str]], interval_ms: int) -> Iterator[Hit]:
        nonlocal carry
        seconds = max(1, interval_ms // 1000)
        for ts, count, path in rows:
            if count == int(count):
                whole_each, extra = divmod(int(count), seconds)
                for k in range(seconds):
                    each = whole_each + (1 if k < extra else 0)
                    if each:
                        yield Hit(ts + k * 1000, "GET", path, 0, each)
                continue
            for k in range(seconds):
                share = count / seconds + carry
                whole = math.floor(share + 1e-9)
                carry = share - whole
                if whole > 0:
                    yield Hit(ts + k * 1000, "GET", path, 0, whole)

    previous_ts: int | None = None
    for ts, count, path in points:
        if previous_ts is not None and ts < previous_ts:
            raise BadInputError(
                f"rows are out of time order ({ts} ms after {previous_ts} ms)",
                where=where,
                fix="sort the rows by timestamp (e.g. `sort -t, -k1,1n`)",
            )
        if group and ts != group[0][0]:
            gap = ts - group[0][0]
            step_ms = gap if step_ms is None else min(step_ms, gap)
            yield from emit(group, min(gap, step_ms))
            group = []
        group.append((ts, count, path))
        previous_ts = ts
    if group:
        yield from emit(group, step_ms or 1000)


def parse_csv(lines: Iterable[str], stats: ReadStats, *, source: str = "<csv>") -> Iterator[Hit]:
    """`timestamp,count[,path]` with a header; rows in time order (out of order: BadInputError file:line)."""
    iterator = iter(lines)
    header_line = ""
    for header_line in iterator:
        stats.lines += 1
        if header_line.strip():
            break
    header = [name.strip().lower() for name in next(csv.reader([header_line]), [])]
    if "timestamp" not in header or "count" not in header:
        raise BadInputError(
            f"CSV header must name the columns timestamp,count[,path], not {header_line.strip()!r}",
            where=f"{source}:{stats.lines}",
            fix="add a header line: timestamp,count (and optionally path)",
        )
    ts_col, count_col = header.index("timestamp"), header.index("count")
    path_col = header.index("path") if "path" in header else None

    def rows() -> Iterator[tuple[int, float, str]]:
        previous = -1
        for line in iterator:
            stats.lines += 1
            if not line.strip():
                stats.lines -= 1
                continue
            try:
                cells = next(csv.reader([line]))
                ts = parse_timestamp_ms(cells[ts_col])
                count = float(cells[count_col])
                if count < 0 or not math.isfinite(count):
                    raise ValueError(line)
                path = cells[path_col].strip() if path_col is not None and path_col < len(cells) else ""
            except (ValueError, IndexError, csv.Error):
                stats.bad(line)
                continue
            if ts < previous:
                raise BadInputError(
                    f"row is out of time order: {cells[ts_col].strip()} comes before the previous row's time",
                    where=f"{source}:{stats.lines}",
                    fix="sort the rows by timestamp; replay needs them in time order",
                )
            previous = ts
            stats.parsed += 1
            yield ts, count, path

    yield from spread_counts(rows(), where=source)


def parse_simulation_log(
    lines: Iterable[str], stats: ReadStats, *, kind: Literal["users", "requests"] = "users"
) -> Iterator[Hit]:
    """Gatling 3.11.5 simulation.log: USER START records (arrivals) or REQUEST records.

    users: Hit(start_ms, "USER", scenario, 0); requests: Hit(start_ms, "GET", request name,
    200 for OK, 500 for KO). The other record types (RUN, ASSERTION, GROUP, ERROR, USER END) are
    valid lines that are simply not counted.
    """
    for line in lines:
        stats.lines += 1
        fields = line.rstrip("\r\n").split("\t")
        record = fields[0]
        try:
            if record == "USER":
                if fields[2] not in ("START", "END"):
                    raise ValueError(line)
                ts = int(fields[3])
                if kind == "users" and fields[2] == "START":
                    stats.parsed += 1
                    yield Hit(ts, "USER", fields[1], 0)
            elif record == "REQUEST":
                start, status = int(fields[3]), fields[5]
                int(fields[4])
                if status not in ("OK", "KO"):
                    raise ValueError(line)
                if kind == "requests":
                    stats.parsed += 1
                    yield Hit(start, "GET", fields[2], 200 if status == "OK" else 500)
            elif record in ("RUN", "ASSERTION", "GROUP", "ERROR"):
                pass
            elif line.strip():
                raise ValueError(line)
            else:
                stats.lines -= 1
        except (ValueError, IndexError):
            stats.bad(line)


# ---------------------------------------------------------------- files


def open_text(path: Path) -> IO[str]:
    """Open a text file, through gzip when it starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", buffering=1 << 20, newline="")


def _first_lines(path: Path, limit: int = 20) -> list[str]:
    found: list[str] = []
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    found.append(line.rstrip("\r\n"))
                    if len(found) >= limit:
                        break
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BadInputError(f"cannot read the recording: {exc}", where=str(path)) from None
    return found


def detect_format(path: str | os.PathLike[str]) -> str:
    """The recording's format from its content: one of FORMATS."""
    path = Path(path)
    if path.is_dir():
        if RunLayout(path).plan.is_file():
            return "spike-run"
        raise BadInputError(
            "a directory is only a recording when it is a spike run directory (with plan.json)",
            where=str(path),
            fix="pass a log or CSV file, or runs/<run id>/ of an earlier spike run",
        )
    if not path.is_file():
        raise BadInputError("no such file", where=str(path), fix="check the path of the recording")
    lines = _first_lines(path)
    if not lines:
        raise BadInputError("the recording is empty", where=str(path), fix="pass a file with traffic in it")
    first = lines[0]
    header = [cell.strip().lower() for cell in first.split(",")]
    if "timestamp" in header and "count" in header:
        return "csv"
    stats = ReadStats()
    for fmt, parser in (("alb", parse_alb), ("combined", parse_combined)):
        stats = ReadStats()
        parsed = sum(1 for _ in parser(lines, stats))
        if parsed and parsed >= stats.malformed:
            return fmt
    raise BadInputError(
        f"unknown recording format; first line: {first[:200]!r}",
        where=f"{path}:1",
        fix="valid formats: nginx/Apache combined or common log, AWS ALB access log (plain or .gz), "
        "CSV with a timestamp,count[,path] header, or a spike run directory",
    )


def _check_stats(stats: ReadStats, where: str, max_malformed_share: float) -> None:
    if stats.parsed == 0:
        if stats.first_malformed is None:
            raise BadInputError("the recording has no records", where=where, fix="pass a file with traffic")
        line_no, text = stats.first_malformed
        raise BadInputError(
            f"no line could be parsed; first bad line: {text!r}",
            where=f"{where}:{line_no}",
            fix="check the format (combined, alb, csv, spike-run) or pass --format",
        )
    if stats.malformed_share > max_malformed_share:
        line_no, text = stats.first_malformed or (0, "")
        raise BadInputError(
            f"{stats.malformed} of {stats.lines} lines ({stats.malformed_share:.2%}) are malformed, more than "
            f"the allowed {max_malformed_share:.2%}; first at line {line_no}: {text!r}",
            where=f"{where}:{line_no}",
            fix="fix or remove the bad lines, or raise the malformed-line threshold",
        )


def _checked(hits: Iterator[Hit], stats: ReadStats, where: str, max_malformed_share: float) -> Iterator[Hit]:
    yield from hits
    _check_stats(stats, where, max_malformed_share)


def read_hits(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    stats: ReadStats | None = None,
    max_malformed_share: float = DEFAULT_MAX_MALFORMED_SHARE,
    kind: Literal["users", "requests"] = "requests",
) -> Iterator[Hit]:
    """Stream the Hits of a recording; `stats` (pass one to read it) is filled as lines go by.

    `kind` only matters for a spike run: "users" yields arrivals (USER START), "requests" the
    requests. The malformed-line checks run when the stream ends.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    stats = stats if stats is not None else ReadStats()
    if fmt == "spike-run":
        yield from spike_run_hits(path, kind=kind, stats=stats, max_malformed_share=max_malformed_share)
        return
    parsers: dict[str, Callable[[Iterable[str], ReadStats], Iterator[Hit]]] = {
        "combined": parse_combined,
        "alb": parse_alb,
        "csv": lambda lines, st: parse_csv(lines, st, source=str(path)),
    }
    if fmt not in parsers:
        raise BadInputError(f"unknown format {fmt!r}", fix=f"valid formats: {', '.join(FORMATS)}")
    with open_text(path) as handle:
        yield from _checked(parsers[fmt](handle, stats), stats, str(path), max_malformed_share)


@dataclass(frozen=True)
class SpikeRunRecording:
    """An earlier spike run as a recording: its shared start and every injector's simulation.log."""

    run_dir: Path
    start_at_ms: int
    logs: tuple[Path, ...]


def read_spike_run(run_dir: str | os.PathLike[str]) -> SpikeRunRecording:
    run_dir = Path(run_dir)
    plan_path = RunLayout(run_dir).plan
    try:
        start_at_ms = int(json.loads(plan_path.read_text())["start_at_ms"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(
            f"cannot read start_at_ms from plan.json: {exc}",
            where=str(plan_path),
            fix="pass the directory of a spike run (runs/<run id>/)",
        ) from None
    logs = tuple(sorted(run_dir.glob("injectors/*/results/*/simulation.log")))
    if not logs:
        raise BadInputError(
            "the run has no simulation.log under injectors/*/results/*/",
            where=str(run_dir),
            fix="replay a run whose results were collected",
        )
    return SpikeRunRecording(run_dir, start_at_ms, logs)


def spike_run_hits(
    run_dir: str | os.PathLike[str],
    *,
    kind: Literal["users", "requests"] = "users",
    stats: ReadStats | None = None,
    max_malformed_share: float = DEFAULT_MAX_MALFORMED_SHARE,
) -> Iterator[Hit]:
    """Every injector's USER starts (kind="users") or requests, log after log (not time-merged)."""
    run = read_spike_run(run_dir)
    stats = stats if stats is not None else ReadStats()
    for log in run.logs:
        with open_text(log) as handle:
            yield from parse_simulation_log(handle, stats, kind=kind)
    if stats.parsed == 0 and stats.malformed == 0:
        record = "USER START" if kind == "users" else "REQUEST"
        raise BadInputError(
            f"the run's simulation.log files have no {record} records", where=str(run.run_dir)
        )
    _check_stats(stats, str(run.run_dir), max_malformed_share)


# ---------------------------------------------------------------- counting


def per_second_counts(
    hits: Iterable[Hit], window: tuple[int | None, int | None] | None = None
) -> SecondCounts:
    """Requests per second, streaming; hits need not be in order.

    `window` = (from_ms, to_ms), either end None for open: only hits with from <= ts < to count,
    and the seconds run from `from_ms` (so a run's curve starts at its start). Without a window the
    seconds start at the first hit's whole second. No hit in the window is a BadInputError.
    """
    lo, hi = window if window is not None else (None, None)
    by_second: dict[int, int] = {}
    get = by_second.get
    if lo is None and hi is None:
        for hit in hits:
            second = hit[0] // 1000
            by_second[second] = get(second, 0) + hit[4]
        offset = 0
    else:
        low = -(1 << 62) if lo is None else lo
        high = 1 << 62 if hi is None else hi
        offset = 0 if lo is None else lo
        for hit in hits:
            ts = hit[0]
            if low <= ts < high:
                second = (ts - offset) // 1000
                by_second[second] = get(second, 0) + hit[4]
    if not by_second:
        span = "" if window is None else f" between {lo} and {hi} ms"
        raise BadInputError(
            f"no requests were recorded{span}",
            fix="widen or move the window (--window FROM..TO) so that it covers recorded traffic",
        )
    first = 0 if lo is not None else min(by_second)
    last = max(by_second)
    if hi is not None:
        last = max(last, (hi - offset - 1) // 1000)
    counts = array("q", bytes(8 * (last - first + 1)))
    for second, count in by_second.items():
        counts[second - first] = count
    start_ms = lo if lo is not None else first * 1000
    return SecondCounts(start_ms, counts)


# ---------------------------------------------------------------- InfluxDB


def parse_flux_csv(text: str) -> list[tuple[int, float]]:
    """Flux annotated CSV (one or more tables) -> (ts_ms, value) from the `_time` and `_value` columns."""
    points: list[tuple[int, float]] = []
    time_col = value_col = -1
    for row in csv.reader(io.StringIO(text)):
        if not row or all(not cell for cell in row):
            time_col = value_col = -1  # a blank line ends a table; the next one has its own header
            continue
        if row[0].startswith("#"):
            continue
        if time_col < 0:
            if "_time" not in row or "_value" not in row:
                if row[0] == "" and "error" in row:
                    continue
                raise BadInputError(f"Flux result has no _time/_value columns: {row}")
            time_col, value_col = row.index("_time"), row.index("_value")
            continue
        if row[value_col] == "":
            continue
        points.append((parse_timestamp_ms(row[time_col]), float(row[value_col])))
    return points


def _influxql_points(doc: dict[str, Any], query: str) -> list[tuple[int, float]]:
    summed: dict[int, float] = {}
    for result in doc.get("results", []):
        if "error" in result:
            raise BadInputError(
                f"InfluxDB rejected the query: {result['error']}", fix=f"check the query {query!r}"
            )
        for series in result.get("series", []):
            columns = series.get("columns", [])
            value_col = next((i for i, name in enumerate(columns) if name != "time"), None)
            if value_col is None or columns[0] != "time":
                raise BadInputError(f"query returned no value column: {columns}", fix="SELECT one value")
            for row in series.get("values", []):
                value = row[value_col]
                if value is None:
                    continue
                summed[int(row[0])] = summed.get(int(row[0]), 0.0) + float(value)
    return sorted(summed.items())


def influx_series(
    url: str,
    query: str,
    *,
    language: Literal["influxql", "flux"] = "influxql",
    database: str | None = None,
    org: str | None = None,
    token_env: str = TOKEN_ENV,
    timeout_s: float = 30.0,
    environ: dict[str, str] | None = None,
) -> list[tuple[int, float]]:
    """Run one query; the series as time-ordered (ts_ms, value) pairs.

    InfluxQL goes to v1 `/query?db=&q=&epoch=ms`; several series (GROUP BY tags) are summed per
    timestamp and nulls skipped. Flux goes to v2 `/api/v2/query?org=` and its annotated CSV is
    read with `parse_flux_csv`. A token, when `$token_env` is set, is sent as `Authorization:
    Token ...` and never appears in errors.
    """
    env = os.environ if environ is None else environ
    if language not in ("influxql", "flux"):
        raise BadInputError(f"unknown query language {language!r}", fix="valid values: 'influxql' or 'flux'")
    try:
        answer = run_query(
            url,
            query,
            language=language,
            database=database,
            org=org,
            token=env.get(token_env),
            timeout_s=timeout_s,
        )
    except SinkUnavailable as exc:
        raise InfrastructureError(exc.message, where=url, fix=exc.fix) from None
    if answer.status >= 300:
        error_cls = BadInputError if answer.status in (400, 401, 403, 404) else InfrastructureError
        raise error_cls(
            f"InfluxDB answered {answer.status} to the {language} query: {answer.body[:300]}",
            where=url,
            fix=f"check the query, database/org and ${token_env}"
            if answer.status != 404
            else "check the URL and API",
        )
    payload = answer.body
    if language == "flux":
        return sorted(parse_flux_csv(payload))
    try:
        doc = json.loads(payload)
    except ValueError:
        raise InfrastructureError(
            f"InfluxDB answered something that is not JSON: {payload[:200]!r}", where=url
        ) from None
    return _influxql_points(doc, query)


def series_hits(
    points: Iterable[tuple[int, float]],
    *,
    values_are: Literal["count", "rate"] = "count",
    where: str = "<series>",
) -> Iterator[Hit]:
    """(ts_ms, value) pairs -> per-second Hits; values are requests per interval, or per second."""
    rows: Iterable[tuple[int, float, str]] = ((ts, value, "") for ts, value in points)
    if values_are == "rate":
        rows = _rates_to_counts(rows)
    return spread_counts(rows, where=where)


def _rates_to_counts(rows: Iterable[tuple[int, float, str]]) -> Iterator[tuple[int, float, str]]:
    listed = list(rows)
    step = min((b[0] - a[0] for a, b in pairwise(listed) if b[0] > a[0]), default=1000)
    for i, (ts, rate, path) in enumerate(listed):
        interval = listed[i + 1][0] - ts if i + 1 < len(listed) and listed[i + 1][0] > ts else step
        yield ts, rate * min(interval, step) / 1000, path
