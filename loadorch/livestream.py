"""The live view's data: the same per-second stream the agents write to InfluxDB.

Every agent appends the points it produces to a tap file beside it; this module
tails those files and keeps, per region and second, the requests, KOs and the
worst injector's p95 (percentiles of several injectors cannot be merged live;
the exact merged ones come from the logs at the end).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from loadorch.metrics import schema


@dataclass
class RegionSecond:
    requests: float = 0.0
    ko: float = 0.0
    p95_ms: float | None = None


@dataclass
class TapFile:
    """One agent's tap, read incrementally (an incomplete last line waits for the next read)."""

    path: Path
    region: str
    offset: int = 0
    partial: bytes = b""

    def read_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete if line]


@dataclass
class LiveStream:
    """Per region and second since the shared start: what the agents have seen so far."""

    start_at_ms: int
    taps: list[TapFile] = field(default_factory=list)
    seconds: dict[tuple[str, int], RegionSecond] = field(default_factory=lambda: defaultdict(RegionSecond))
    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    ko: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # per injector: the seconds Gatling reported anything (its heartbeat), and the host's CPU per second
    beats: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    cpu_pct: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    _newest: dict[str, int] = field(default_factory=dict)

    def add_tap(self, path: Path, region: str) -> None:
        self.taps.append(TapFile(path, region))

    def poll(self) -> None:
        for tap in self.taps:
            for text in tap.read_lines():
                self._add(tap.region, text)

    def region_second(self, region: str, second: int) -> RegionSecond | None:
        return self.seconds.get((region, second))

    def settled_second(self, region: str) -> int | None:
        """The newest second of `region` that no injector will still add to.

        The newest second seen may be partial (another injector's flush or the agent's next write
        is still on its way), so it is the one before it. This does not depend on where the shared
        start falls within a wall-clock second, or on when the caller looks.
        """
        newest = self._newest.get(region)
        return newest - 1 if newest is not None and newest >= 1 else None

    def _add(self, region: str, text: str) -> None:
        point = parse_point(text)
        if point is None:
            return
        measurement, tags, fields, ts_ms = point
        injector = tags.get("injector", "")
        if measurement == schema.INJECTOR_HEALTH:
            cpu = fields.get("cpu_pct")
            if cpu is not None and ts_ms >= self.start_at_ms:
                self.cpu_pct[injector][(ts_ms - self.start_at_ms) // 1000] = cpu
            return
        if measurement != schema.GATLING:
            return
        if ts_ms >= self.start_at_ms + 1000:
            self.beats[injector].add((ts_ms - self.start_at_ms) // 1000 - 1)
        if tags.get("request") != "allRequests":
            return
        second = max(0, (ts_ms - self.start_at_ms) // 1000)
        # Gatling flushes each second's stats at the end of it: they belong to the second before
        key = max(0, second - 1)
        row = self.seconds[(region, key)]
        self._newest[region] = max(key, self._newest.get(region, key))
        count = fields.get("count", 0.0)
        if tags.get("status") == "all":
            row.requests += count
            self.requests[region] += count
            p95 = fields.get("p95")
            if p95 is not None and count:
                row.p95_ms = p95 if row.p95_ms is None else max(row.p95_ms, p95)
        elif tags.get("status") == "ko":
            row.ko += count
            self.ko[region] += count


def parse_point(text: str) -> tuple[str, dict[str, str], dict[str, float], int] | None:
    """A line-protocol line as spike's agents write it (numeric fields; tags without spaces)."""
    try:
        head, field_text, ts_text = text.rsplit(" ", 2)
        measurement, *tag_parts = head.split(",")
        tags = dict(part.split("=", 1) for part in tag_parts)
        fields = {}
        for part in field_text.split(","):
            key, value = part.split("=", 1)
            if value and value[0] not in '"tf':
                fields[key] = float(value)
        return measurement, tags, fields, int(ts_text)
    except ValueError:
        return None
