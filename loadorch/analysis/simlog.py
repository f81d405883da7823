"""Parse Gatling 3.11.5 `simulation.log` files and merge them into exact statistics.

A *simulation.log* is written by each injector JVM: one record per line,
fields separated by tabs (Gatling replaces tabs and newlines inside messages
by spaces):

- ``ASSERTION <base64>``
- ``RUN <simulationClass> <simulationId> <startMillis> <description> <gatlingVersion>``
  (startMillis: when injection began, after waiting for spike's shared start)
- ``USER <scenario> START|END <millis>``
- ``REQUEST <groups> <name> <startMillis> <endMillis> OK|KO <message>``
  (groups comma-separated, usually empty; message is a single space for OK;
  response time = end - start in whole ms)
- ``GROUP <groups> <start> <end> <cumulatedResponseTime> OK|KO``
- ``ERROR <message> <millis>``

A record is accepted when Gatling's own report reader would accept it (the
tab-split line, trailing empty fields dropped, has at least the fields above),
so counts agree exactly with Gatling's report. Any other complete line is a
*malformed line*: counted, never fatal. A last line without its newline is
still being written: :class:`LogAccumulator` keeps it until the rest arrives
(:meth:`LogAccumulator.finish` counts it as malformed).

Speed: lines are not split one by one in Python. Each chunk is scanned by
compiled regular expressions anchored on the record header, and counting is
done with ``map``/``zip``/``Counter`` so that the per-record work runs in C.
:func:`analyze_logs` parses one file per process and merges the returned
histograms.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import compress, repeat
from operator import floordiv, itemgetter, sub
from pathlib import Path

from loadorch.analysis.stats import (
    ErrorCount,
    InjectorSummary,
    Latency,
    MergedStats,
    RegionSecond,
    SecondStats,
    percentile,
)
from loadorch.errors import InjectorError

READ_CHUNK_BYTES = 1 << 20
"""How much of a log is parsed at a time (bounds memory per process)."""

INCOMING_END = -(2**63)
"""The end time Gatling writes for an unmatched incoming event; such records carry no latency."""

# One match is one line: it starts at the newline before the header and no
# group can cross a newline. After the status, Gatling needs a 7th field that
# is not empty or, failing that, a later non-empty field (see _java_fields):
# some non-tab character. Only KO lines have their message captured, by a
# second pattern run when a chunk has KO records; Gatling's message is the
# 7th field (see _first_field).
_REQUEST_RE = re.compile(rb"\nREQUEST\t([^\t\n]*\t[^\t\n]*)\t(\d+)\t(-?\d+)\t(OK|KO)\t[^\n]*[^\t\n]")
_KO_RE = re.compile(rb"\nREQUEST\t[^\t\n]*\t[^\t\n]*\t\d+\t(-?\d+)\tKO\t([^\n]*[^\t\n][^\n]*)")
_USER_START_RE = re.compile(rb"\nUSER\t[^\t\n]*\tSTART\t(\d+)(?=[\t\n])")
_USER_END_RE = re.compile(rb"\nUSER\t[^\t\n]*\tEND\t\d+(?=[\t\n])")
_COLUMNS = tuple(itemgetter(i) for i in range(4))
_RARE_RE = re.compile(rb"\n(RUN|ASSERTION|GROUP|ERROR)\t([^\n]*)")
_OK = b"OK"
_KO = b"KO"


@dataclass(frozen=True)
class InjectorLog:
    """One injector's simulation.log: which injector wrote it, in which region, where it is."""

    injector_id: str
    region: str
    path: Path


def _is_long(field: bytes) -> bool:
    """Whether Java's Long.parseLong would read `field` (optional sign, digits)."""
    digits = field[1:] if field[:1] in (b"-", b"+") else field
    return digits.isdigit() and len(digits) <= 19


def _java_fields(rest: bytes) -> list[bytes]:
    """The fields after the header as Java's String.split("\\t") gives them (trailing empties dropped)."""
    fields = rest.split(b"\t")
    while fields and not fields[-1]:
        fields.pop()
    return fields


def _first_field(message: bytes) -> bytes:
    """The 7th field of a REQUEST line: the message group may hold extra fields after a tab."""
    return message.split(b"\t", 1)[0] if b"\t" in message else message


class LogAccumulator:
    """Streaming parser and accumulator for one injector's simulation.log.

    Feed it the file's bytes in chunks of any size (:meth:`feed`), as a live
    view tailing a growing file does, or let :func:`analyze_logs` read whole
    files. It keeps only small exact histograms and counters, never records:

    - ``requests``: (``b"groups\\tname"``, ``b"OK"|b"KO"``, response ms) -> count
    - ``second_latency``: (second, status, response ms) -> count, by request start
    - ``users_started``: second -> count; ``users_ended``: count
    - ``errors``: message -> count (KO request messages and ERROR records)

    A *second* here is ``floor((t - start_at_ms - clock_offset_ms) / 1000)``
    and may be negative (before the shared start); :func:`merge` folds those
    into second 0. ``clock_offset_ms`` is the injector's clock minus the
    orchestrator's: its timestamps are read on its own clock.
    """

    def __init__(self, injector_id: str, region: str, start_at_ms: int, clock_offset_ms: int = 0) -> None:
        self.injector_id = injector_id
        self.region = region
        self.start_at_ms = start_at_ms
        self.origin_ms = start_at_ms + clock_offset_ms  # the shared start on this injector's clock
        self.requests: Counter[tuple[bytes, bytes, int]] = Counter()
        self.second_latency: Counter[tuple[int, bytes, int]] = Counter()
        self.users_started: Counter[int] = Counter()
        self.users_ended = 0
        self.errors: Counter[bytes] = Counter()
        self.run_start_ms: int | None = None
        self.first_request_start_ms: int | None = None
        self.last_request_end_ms: int | None = None
        self.lines_read = 0
        self.malformed_lines = 0
        self.bytes_read = 0
        self.request_records = 0
        self.incoming_records = 0
        self.user_records = 0
        self.run_records = 0
        self.assertion_records = 0
        self.group_records = 0
        self.error_records = 0
        self._tail = b""
        self._finished = False

    # -- input ---------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Parse the complete lines of `chunk`; an unfinished last line waits for the next call."""
        if self._finished:
            raise ValueError(f"log of injector {self.injector_id} was already finished")
        if not chunk:
            return
        self.bytes_read += len(chunk)
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._tail += chunk
            return
        # The leading newline lets every line, the first too, match "\nHEADER\t".
        data = b"".join((b"\n", self._tail, chunk[: cut + 1]))
        self._tail = chunk[cut + 1 :]
        self._parse(data)

    def finish(self) -> None:
        """End of input: a last line without a newline is counted as malformed."""
        if self._finished:
            return
        if self._tail:
            self.lines_read += 1
            self.malformed_lines += 1
            self._tail = b""
        self._finished = True

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete last line kept for the next :meth:`feed`."""
        return len(self._tail)

    def read_file(self, path: Path, chunk_bytes: int = READ_CHUNK_BYTES) -> None:
        """Feed the whole file at `path` and finish."""
        try:
            with path.open("rb") as f:
                while chunk := f.read(chunk_bytes):
                    self.feed(chunk)
        except OSError as exc:
            raise InjectorError(
                f"cannot read simulation log {path}: {exc.strerror or exc}",
                where=self.injector_id,
                fix="check that the injector ran and its results were collected",
            ) from exc
        self.finish()

    # -- parsing ---------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        """Account for `data`: complete lines, starting with a newline and ending with one."""
        lines = data.count(b"\n") - 1
        # The parse allocates many small objects and frees them all: nothing for the
        # cycle collector to find, but its passes over the live lists would cost more
        # than the parse itself.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            valid = self._parse_requests(data) + self._parse_users(data)
            if valid < lines:  # lines that are neither REQUEST nor USER records
                valid += self._parse_rare(data)
        finally:
            if gc_was_enabled:
                gc.enable()
        self.lines_read += lines
        self.malformed_lines += lines - valid

    def _parse_requests(self, data: bytes) -> int:
        recs = _REQUEST_RE.findall(data)
        if not recs:
            return 0
        keys, starts_b, ends_b, statuses = (list(map(column, recs)) for column in _COLUMNS)
        starts = list(map(int, starts_b))
        ends = list(map(int, ends_b))
        if min(ends) < 0:
            # Unmatched incoming events (end = Long.MinValue) carry no latency;
            # Gatling's report skips them. Other negative ends are kept as written.
            keep = [end != INCOMING_END for end in ends]
            self.incoming_records += keep.count(False)
            keys, starts, ends, statuses = (
                list(compress(column, keep)) for column in (keys, starts, ends, statuses)
            )
            if not keys:
                return len(recs)
        n = len(starts)
        rts = list(map(sub, ends, starts))
        seconds = list(map(floordiv, map(sub, starts, repeat(self.origin_ms, n)), repeat(1000, n)))
        self.requests.update(zip(keys, statuses, rts, strict=True))
        self.second_latency.update(zip(seconds, statuses, rts, strict=True))
        if _KO in statuses:
            self.errors.update(
                _first_field(message) for end, message in _KO_RE.findall(data) if int(end) != INCOMING_END
            )
        first, last = min(starts), max(ends)
        if self.first_request_start_ms is None or first < self.first_request_start_ms:
            self.first_request_start_ms = first
        if self.last_request_end_ms is None or last > self.last_request_end_ms:
            self.last_request_end_ms = last
        self.request_records += n
        return len(recs)

    def _parse_users(self, data: bytes) -> int:
        stamps = _USER_START_RE.findall(data)
        n = len(stamps)
        if n:
            self.users_started.update(
                map(floordiv, map(sub, map(int, stamps), repeat(self.origin_ms, n)), repeat(1000, n))
            )
        ended = len(_USER_END_RE.findall(data))
        self.users_ended += ended
        self.user_records += n + ended
        return n + ended

    def _parse_rare(self, data: bytes) -> int:
        """RUN, ASSERTION, GROUP and ERROR records: few per file, checked field by field."""
        valid = 0
        for header, rest in _RARE_RE.findall(data):
            fields = _java_fields(rest)
            if header == b"RUN":
                if len(fields) >= 5 and _is_long(fields[2]):
                    valid += 1
                    self.run_records += 1
                    if self.run_start_ms is None:
                        self.run_start_ms = int(fields[2])
            elif header == b"ASSERTION":
                if len(fields) >= 1:
                    valid += 1
                    self.assertion_records += 1
            elif header == b"GROUP":
                if len(fields) >= 5 and all(_is_long(f) for f in fields[1:4]) and fields[4] in (_OK, _KO):
                    valid += 1
                    self.group_records += 1
            elif len(fields) >= 2 and _is_long(fields[1]):  # ERROR
                valid += 1
                self.error_records += 1
                self.errors[fields[0]] += 1
        return valid

    # -- results -------------------------------------------------------------

    def summary(self) -> InjectorSummary:
        """What this log says about its injector so far."""
        ok = sum(c for (_, status, _), c in self.requests.items() if status == _OK)
        total = sum(self.requests.values())
        first = self.first_request_start_ms
        return InjectorSummary(
            injector_id=self.injector_id,
            region=self.region,
            run_start_ms=self.run_start_ms,
            first_request_start_ms=first,
            start_skew_ms=None if first is None else first - self.origin_ms,
            last_request_end_ms=self.last_request_end_ms,
            requests=total,
            requests_ko=total - ok,
            users_started=sum(self.users_started.values()),
            users_ended=self.users_ended,
            lines_read=self.lines_read,
            malformed_lines=self.malformed_lines,
            bytes_read=self.bytes_read,
        )


def _request_name(key: bytes) -> str:
    """The display name of a request key ``b"groups\\tname"``: "g1 / g2 / name" inside groups."""
    groups, _, name = key.partition(b"\t")
    text = name.decode("utf-8", "replace")
    if groups:
        return " / ".join([*groups.decode("utf-8", "replace").split(","), text])
    return text


def _hists() -> tuple[Counter[int], Counter[int]]:
    """A fresh (OK, KO) pair of histograms."""
    return Counter(), Counter()


class _Merger:
    """Folds accumulators in one at a time, so a caller need not hold them all."""

    def __init__(self) -> None:
        self.start_at_ms: int | None = None
        self.by_request: dict[bytes, tuple[Counter[int], Counter[int]]] = {}
        self.by_region: dict[str, tuple[Counter[int], Counter[int]]] = {}
        self.by_injector: dict[str, tuple[Counter[int], Counter[int]]] = {}
        self.errors: Counter[bytes] = Counter()
        # (region, second) -> users started / requests / KO requests / latency histogram
        self.sec_users: Counter[tuple[str, int]] = Counter()
        self.sec_requests: Counter[tuple[str, int]] = Counter()
        self.sec_ko: Counter[tuple[str, int]] = Counter()
        self.sec_latency: dict[tuple[str, int], Counter[int]] = {}
        self.early_users = 0
        self.early_requests = 0
        self.users_started = 0
        self.users_ended = 0
        self.summaries: list[InjectorSummary] = []
        self.lines_read = 0
        self.malformed_lines = 0
        self.error_records = 0
        self.group_records = 0

    def add(self, acc: LogAccumulator) -> None:
        if self.start_at_ms is None:
            self.start_at_ms = acc.start_at_ms
        elif acc.start_at_ms != self.start_at_ms:
            raise ValueError(
                f"accumulators disagree on the shared start: {self.start_at_ms} and {acc.start_at_ms}"
            )
        acc_ok, acc_ko = _hists()
        for (key, status, rt), count in acc.requests.items():
            req_ok, req_ko = self.by_request.setdefault(key, _hists())
            if status == _OK:
                req_ok[rt] += count
                acc_ok[rt] += count
            else:
                req_ko[rt] += count
                acc_ko[rt] += count
        for ok, ko in (
            self.by_injector.setdefault(acc.injector_id, _hists()),
            self.by_region.setdefault(acc.region, _hists()),
        ):
            ok.update(acc_ok)
            ko.update(acc_ko)
        self.errors.update(acc.errors)
        self.users_ended += acc.users_ended
        region = acc.region
        for second, count in acc.users_started.items():
            self.users_started += count
            if second < 0:
                self.early_users += count
                second = 0
            self.sec_users[region, second] += count
        sec_requests, sec_ko, sec_latency = self.sec_requests, self.sec_ko, self.sec_latency
        for (second, status, rt), count in acc.second_latency.items():
            if second < 0:
                self.early_requests += count
                second = 0
            bin_key = (region, second)
            sec_requests[bin_key] += count
            if status == _KO:
                sec_ko[bin_key] += count
            hist = sec_latency.get(bin_key)
            if hist is None:
                hist = sec_latency[bin_key] = Counter()
            hist[rt] += count
        self.summaries.append(acc.summary())
        self.lines_read += acc.lines_read
        self.malformed_lines += acc.malformed_lines
        self.error_records += acc.error_records
        self.group_records += acc.group_records

    def result(self) -> MergedStats:
        total_ok, total_ko = _hists()
        for ok, ko in self.by_request.values():
            total_ok.update(ok)
            total_ko.update(ko)
        last_second = max((second for _, second in (*self.sec_users, *self.sec_requests)), default=-1)
        regions = sorted(self.by_region)
        per_second = []
        for second in range(last_second + 1):
            rows = {
                region: RegionSecond(
                    users_started=self.sec_users.get((region, second), 0),
                    requests=self.sec_requests.get((region, second), 0),
                    ko=self.sec_ko.get((region, second), 0),
                    p95=percentile(self.sec_latency.get((region, second), {}), 95),
                )
                for region in regions
            }
            per_second.append(
                SecondStats(
                    second=second,
                    users_started=sum(row.users_started for row in rows.values()),
                    requests=sum(row.requests for row in rows.values()),
                    ko=sum(row.ko for row in rows.values()),
                    regions=rows,
                )
            )
        errors: Counter[str] = Counter()
        for message, count in self.errors.items():
            errors[message.decode("utf-8", "replace")] += count
        requests_ok, requests_ko = sum(total_ok.values()), sum(total_ko.values())
        return MergedStats(
            start_at_ms=self.start_at_ms if self.start_at_ms is not None else 0,
            files_read=len(self.summaries),
            lines_read=self.lines_read,
            malformed_lines=self.malformed_lines,
            requests=requests_ok + requests_ko,
            requests_ok=requests_ok,
            requests_ko=requests_ko,
            users_started=self.users_started,
            users_ended=self.users_ended,
            early_users=self.early_users,
            early_requests=self.early_requests,
            error_records=self.error_records,
            group_records=self.group_records,
            latency=Latency(ok_hist=total_ok, ko_hist=total_ko),
            by_request=_by_name({_request_name(k): v for k, v in self.by_request.items()}),
            by_region=_by_name(self.by_region),
            by_injector=_by_name(self.by_injector),
            errors=tuple(
                ErrorCount(message, count)
                for message, count in sorted(errors.items(), key=lambda item: (-item[1], item[0]))
            ),
            per_second=tuple(per_second),
            injectors=tuple(sorted(self.summaries, key=lambda s: (s.injector_id, s.region))),
        )


def merge(accumulators: Iterable[LogAccumulator]) -> MergedStats:
    """Merge the histograms of every injector's accumulator into exact run statistics.

    All accumulators must share the same `start_at_ms`. Accumulators are
    folded in one at a time (an iterator of them is never held whole). Works
    at any time, also on accumulators still being fed (a live view).
    """
    merger = _Merger()
    for acc in accumulators:
        merger.add(acc)
    return merger.result()


def _by_name(scopes: dict[str, tuple[Counter[int], Counter[int]]]) -> dict[str, Latency]:
    return {name: Latency(ok_hist=ok, ko_hist=ko) for name, (ok, ko) in sorted(scopes.items())}


def _analyze_one(log: InjectorLog, start_at_ms: int) -> LogAccumulator:
    """Parse one whole log (runs in a worker process)."""
    acc = LogAccumulator(log.injector_id, log.region, start_at_ms)
    acc.read_file(log.path)
    return acc


def analyze_logs(logs: Sequence[InjectorLog], start_at_ms: int, *, workers: int | None = None) -> MergedStats:
    """Parse every injector's finished simulation.log and merge them into exact statistics.

    `start_at_ms` is spike's shared start (epoch ms); per-second bins count
    from it. With `workers` > 1 (default: one per file, at most one per CPU)
    the files are parsed in that many processes, one file per task, and
    only their small histograms come back to be merged.
    """
    for log in logs:
        if not log.path.is_file():
            raise InjectorError(
                f"simulation log {log.path} does not exist",
                where=log.injector_id,
                fix="check that the injector ran and its results were collected",
            )
    if workers is None:
        workers = min(len(logs), os.cpu_count() or 1)
    workers = max(1, min(workers, len(logs)))
    if workers == 1:
        return merge(_analyze_one(log, start_at_ms) for log in logs)
    # fork: starts in milliseconds and, unlike spawn/forkserver, does not re-import the
    # caller's __main__ (scripts without a __main__ guard keep working). The workers only
    # read files and count, so threads of the parent (a live view) do not matter to them.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        # each result is folded in and dropped as soon as it arrives, in order
        return merge(pool.map(_analyze_one, logs, repeat(start_at_ms)))
