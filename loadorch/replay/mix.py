"""The request mix of a recording: path templates, their weights and status mix, and feeders.

Paths become templates: a numeric segment, a UUID or a long hex hash becomes a placeholder
named from the segment before it (`/posts/123` -> `/posts/{post_id}`, `/u/9f86d081...` ->
`/u/{u_hash}`), and the values seen are kept per placeholder in a bounded reservoir sample so
that feeders can be built from them.

Query strings keep their parameter names (sorted, so that the order clients use does not split
a template). Values that look sensitive (names containing token, key, secret, password, session,
auth, email or sig; values that look like emails, JWTs, long hex or base64 strings) are always
dropped and counted. Other values are dropped too by default (`query_values="drop"`: the
template says `?page=`); "literal" keeps them in the template, "placeholder" makes them a
`{name}` placeholder with a feeder.

Top N: the N most requested (method, template) pairs are kept; the rest is dropped and the kept
weights are renormalised to sum to 1, and `dropped_share` says how much of the recorded traffic
that was. Merging the tail into "the nearest" template would invent traffic shapes nobody
recorded (a rare admin path would load the busiest endpoint); dropping it and reporting the
share is honest and lets the user raise N.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from loadorch.replay.sources import Hit

DEFAULT_TOP_N = 20
DEFAULT_RESERVOIR = 10_000
QueryValues = Literal["drop", "literal", "placeholder"]

_SENSITIVE_NAME = re.compile(r"token|key|secret|passw|pwd|session|auth|email|sig|credential|cookie", re.I)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_LONG_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_BASE64ISH = re.compile(r"^[A-Za-z0-9+/_-]{24,}={0,2}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME_CHARS = re.compile(r"[^a-z0-9]+")
_CACHE_LIMIT = 100_000
_FOLD_EVERY = 200_000  # distinct (method, path, status) triples held before they are folded


@dataclass(frozen=True)
class TemplateShare:
    """One request of the mix: a stable name, method, path template, share of requests, status counts."""

    name: str
    method: str
    path_template: str
    weight: float
    requests: int
    statuses: dict[int, int]


@dataclass(frozen=True)
class RequestMix:
    """The mix of a recording: kept templates (weights sum to 1) and feeders for their placeholders.

    dropped_share: the share of recorded requests whose templates fell outside the top N.
    sensitive_dropped: how many sensitive query values were dropped.
    """

    templates: list[TemplateShare]
    feeders: dict[str, list[str]]
    dropped_share: float
    sensitive_dropped: int
    total_requests: int = 0

    def feeder_csv(self, name: str) -> str:
        """A Gatling CSV feeder (header = the placeholder name) with the observed values."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([name])
        for value in self.feeders[name]:
            writer.writerow([value])
        return out.getvalue()


def is_sensitive(name: str, value: str) -> bool:
    """Whether a query parameter's value must not leave the recording."""
    if _SENSITIVE_NAME.search(name):
        return True
    if "@" in value and _EMAIL.match(value):
        return True
    return bool(_JWT.match(value) or _LONG_HEX.match(value) or (_BASE64ISH.match(value) and _mixed(value)))


def _mixed(value: str) -> bool:
    # A long run of one character class ("aaaaaaaa...", a long word) is not a secret; tokens mix classes.
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def _placeholder_base(previous: str | None) -> str:
    if previous is None or previous.startswith("{"):
        return ""
    name = _NAME_CHARS.sub("_", _singular(previous.lower())).strip("_")
    return name


def _segment_kind(segment: str) -> str | None:
    if segment.isdigit():
        return "id"
    if len(segment) == 36 and _UUID.match(segment):
        return "id"
    if len(segment) >= 16 and _LONG_HEX.match(segment):
        return "hash"
    return None


def normalise_path(
    path: str, *, query_values: QueryValues = "drop"
) -> tuple[str, list[tuple[str, str]], int]:
    """(template, [(placeholder, value)], sensitive values dropped) for one recorded path."""
    raw_path, _, query = path.partition("?")
    segments = raw_path.split("/")
    used: set[str] = set()
    values: list[tuple[str, str]] = []
    out: list[str] = []
    previous: str | None = None
    for segment in segments:
        kind = _segment_kind(segment) if segment else None
        if kind is None:
            out.append(segment)
            previous = segment if segment else previous
            continue
        base = _placeholder_base(previous)
        name = f"{base}_{kind}" if base else kind
        unique, n = name, 2
        while unique in used:
            unique, n = f"{name}_{n}", n + 1
        used.add(unique)
        values.append((unique, segment))
        out.append("{" + unique + "}")
        previous = out[-1]
    template = "/".join(out)
    sensitive = 0
    if query:
        params: list[tuple[str, str]] = []
        for pair in query.split("&"):
            if not pair:
                continue
            key, has_value, value = pair.partition("=")
            if has_value and value and is_sensitive(key, value):
                sensitive += 1
                params.append((key, key + "="))
            elif not has_value:
                params.append((key, key))
            elif query_values == "literal":
                params.append((key, pair))
            elif query_values == "placeholder" and value:
                name = _NAME_CHARS.sub("_", key.lower()).strip("_") or "param"
                unique, n = name, 2
                while unique in used:
                    unique, n = f"{name}_{n}", n + 1
                used.add(unique)
                values.append((unique, value))
                params.append((key, f"{key}={{{unique}}}"))
            else:
                params.append((key, key + "="))
        if params:
            template += "?" + "&".join(text for _, text in sorted(params))
    return template, values, sensitive


class _Reservoir:
    """Algorithm R: a uniform sample of at most `size` of the values seen."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.values: list[str] = []

    def add(self, value: str) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value


@dataclass
class _Tally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def _request_name(method: str, template: str, taken: set[str]) -> str:
    words = _NAME_CHARS.sub("_", template.partition("?")[0].replace("{", "").replace("}", "").lower()).strip(
        "_"
    )
    base = f"{method.lower()}_{words}" if words else f"{method.lower()}_root"
    base = base[:60].rstrip("_")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def build_mix(
    hits: Iterable[Hit],
    *,
    top_n: int = DEFAULT_TOP_N,
    query_values: QueryValues = "drop",
    reservoir_size: int = DEFAULT_RESERVOIR,
    seed: int = 0,
) -> RequestMix:
    """Count requests per (method, template), keep the top N, sample placeholder values; streaming."""
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, not {top_n}")
    rng = random.Random(seed)
    cache: dict[str, tuple[str, list[tuple[str, str]], int]] = {}
    tallies: dict[tuple[str, str], _Tally] = {}
    reservoirs: dict[tuple[str, str], dict[str, _Reservoir]] = {}
    sensitive = 0
    total = 0

    def fold(raw: dict[tuple[str, str, int], int]) -> None:
        """Distinct (method, path, status) with their counts into the tallies and reservoirs."""
        nonlocal total, sensitive
        for (method, path, status), weight in raw.items():
            normalised = cache.get(path)
            if normalised is None:
                if len(cache) > _CACHE_LIMIT:
                    cache.clear()
                normalised = cache[path] = normalise_path(path, query_values=query_values)
            template, values, secret = normalised
            key = (method, template)
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = _Tally()
                reservoirs[key] = {}
            total += weight
            tally.requests += weight
            tally.statuses[status] = tally.statuses.get(status, 0) + weight
            sensitive += secret * weight
            for name, value in values:
                pool = reservoirs[key].get(name)
                if pool is None:
                    pool = reservoirs[key][name] = _Reservoir(reservoir_size, rng)
                pool.add(value)

    # The hot loop only counts raw (method, path, status) triples: one dict update per line.
    # Templates are made per distinct triple, in bounded batches (memory stays flat even when
    # every path is unique); a feeder then samples distinct observed values.
    raw: dict[tuple[str, str, int], int] = {}
    get = raw.get
    for hit in hits:
        triple = (hit[1], hit[2], hit[3])
        raw[triple] = get(triple, 0) + hit[4]
        if len(raw) >= _FOLD_EVERY:
            fold(raw)
            raw.clear()
    fold(raw)
    ranked = sorted(tallies.items(), key=lambda item: (-item[1].requests, item[0]))
    kept = ranked[:top_n]
    kept_total = sum(t.requests for _, t in kept)
    taken: set[str] = set()
    templates = [
        TemplateShare(
            name=_request_name(method, template, taken),
            method=method,
            path_template=template,
            weight=tally.requests / kept_total if kept_total else 0.0,
            requests=tally.requests,
            statuses=dict(sorted(tally.statuses.items())),
        )
        for (method, template), tally in kept
    ]
    feeders: dict[str, list[str]] = {}
    merged: dict[str, _Reservoir] = {}
    for key, _ in kept:
        for name, pool in reservoirs[key].items():
            if name not in merged:
                merged[name] = _Reservoir(reservoir_size, rng)
            for value in pool.values:  # same placeholder in several templates: one feeder
                merged[name].add(value)
    for name in sorted(merged):
        feeders[name] = list(dict.fromkeys(merged[name].values))
    return RequestMix(
        templates=templates,
        feeders=feeders,
        dropped_share=(total - kept_total) / total if total else 0.0,
        sensitive_dropped=sensitive,
        total_requests=total,
    )
