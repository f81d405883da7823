"""Terraform's machine-readable UI (`-json`), read one line at a time, and what it adds up to.

Pure: text in, values out, no I/O and no clock (elapsed times are passed in). `UiStream` turns each
line into a `UiEvent` naming its region; `ResourceTally` counts, per region, the resources a change
planned and the ones it has finished, for the progress report of apply and destroy.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ALL_REGIONS = "*"
RESOURCES_EVENT = "resources"
_MODULE = re.compile(r"module\.(fleet_[a-z0-9_]+)")
_MODULE_DIR = re.compile(r"modules/(fleet_[a-z0-9_]+)/")


def region_of_module(name: str) -> str:
    """fleet_eu_west_2 -> eu-west-2 (the inverse of `config.module_name`; region codes have no _)."""
    return name.removeprefix("fleet_").replace("_", "-")


def region_of_address(address: str) -> str:
    """The region of a resource address such as `module.fleet_eu_west_2.aws_instance.injector[0]`."""
    found = _MODULE.match(address)
    return region_of_module(found.group(1)) if found else ALL_REGIONS


@dataclass(frozen=True)
class UiEvent:
    """One progress report: which region, what kind of message, and a one-line detail."""

    region: str
    event: str
    detail: str
    address: str = ""  # the resource, for hook messages (apply_start, apply_complete, ...)
    action: str = ""  # create, update, delete, read, ... for hook messages


@dataclass(frozen=True)
class Diagnostic:
    """An error or warning Terraform reported, and the region it belongs to (ALL_REGIONS if none)."""

    severity: str
    summary: str
    detail: str
    region: str

    def render(self) -> str:
        text = f"{self.summary}: {self.detail}" if self.detail else self.summary
        return " ".join(text.split())


class UiStream:
    """Reads Terraform's machine-readable UI one line at a time (pure: no I/O, no clock).

    Besides turning each line into a `UiEvent` it keeps what a failure report needs: the error
    diagnostics, the regions whose resources errored, the last change summary and the last plain
    (non-JSON) lines, where Terraform writes what it cannot say in JSON.
    """

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.errored_regions: set[str] = set()
        self.summary = ""
        self.plain_tail: deque[str] = deque(maxlen=20)

    def feed(self, line: str) -> UiEvent | None:
        line = line.strip()
        if not line:
            return None
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or "type" not in message:
            self.plain_tail.append(line)
            return UiEvent(ALL_REGIONS, "log", line)
        kind = str(message["type"])
        text = " ".join(str(message.get("@message", "")).split())  # some messages span lines
        if kind == "diagnostic":
            return self._diagnostic(message.get("diagnostic") or {}, text)
        region = _region_of_message(message)
        if kind == "apply_errored":
            self.errored_regions.add(region)
        if kind == "change_summary":
            self.summary = text
        # hook: a resource's apply step; change: a planned change of one resource
        holder = message.get("hook") or message.get("change") or {}
        address = str((holder.get("resource") or {}).get("addr", ""))
        return UiEvent(region, kind, _strip_module(text), address, str(holder.get("action", "")))

    def _diagnostic(self, body: Mapping[str, Any], text: str) -> UiEvent:
        region = ALL_REGIONS
        if body.get("address"):
            region = region_of_address(str(body["address"]))
        if region == ALL_REGIONS:
            filename = str((body.get("range") or {}).get("filename", ""))
            found = _MODULE_DIR.search(filename)
            if found:
                region = region_of_module(found.group(1))
        diagnostic = Diagnostic(
            severity=str(body.get("severity", "error")),
            summary=str(body.get("summary", text)),
            detail=str(body.get("detail", "")),
            region=region,
        )
        if diagnostic.severity == "error":
            self.diagnostics.append(diagnostic)
        return UiEvent(region, "diagnostic", f"{diagnostic.severity}: {diagnostic.render()}")

    def failed_regions(self) -> list[str]:
        """Regions named by an error (a resource that errored, or a diagnostic's address)."""
        named = self.errored_regions | {d.region for d in self.diagnostics}
        return sorted(r for r in named if r != ALL_REGIONS)


def _region_of_message(message: Mapping[str, Any]) -> str:
    for holder in ("hook", "change"):
        resource = (message.get(holder) or {}).get("resource") or {}
        if resource.get("addr"):
            return region_of_address(str(resource["addr"]))
    found = _MODULE.search(str(message.get("@message", "")))
    return region_of_module(found.group(1)) if found else ALL_REGIONS


def _strip_module(text: str) -> str:
    # The region is reported separately; "module.fleet_eu_west_2." would only repeat it.
    return _MODULE.sub("", text, count=1).lstrip(".")


@dataclass
class RegionCount:
    """One region's resources in one apply or destroy: planned, finished, failed."""

    planned: int = 0
    done: int = 0
    failed: int = 0


class ResourceTally:
    """Resources planned and finished per region, from the events of one `apply` or `destroy`.

    The plan Terraform prints before it changes anything says what is planned: one
    `planned_change` per resource (create for apply, delete for destroy; data sources are reads
    and do not count), then a `change_summary` "Plan: ...", from which on the counts are known.
    Each `apply_complete` of that action is one resource done, each `apply_errored` one failed.
    """

    def __init__(self, verb: str) -> None:
        if verb not in ("apply", "destroy"):
            raise ValueError(f"no resource tally for terraform {verb}; valid verbs are apply and destroy")
        self.verb = verb
        self.action = "create" if verb == "apply" else "delete"
        self.past = "created" if verb == "apply" else "destroyed"
        self.regions: dict[str, RegionCount] = {}
        self.planned_known = False

    def feed(self, event: UiEvent) -> bool:
        """Count `event`; True when it completes the plan (the counts are known from now on)."""
        if event.event == "planned_change" and event.action in (self.action, "replace"):
            self._count(event.region).planned += 1
        elif event.event == "change_summary" and event.detail.startswith("Plan:") and not self.planned_known:
            self.planned_known = True
            return True
        elif event.event in ("apply_complete", "apply_errored") and event.action == self.action:
            count = self._count(event.region)
            if event.event == "apply_complete":
                count.done += 1
            else:
                count.failed += 1
        return False

    def _count(self, region: str) -> RegionCount:
        return self.regions.setdefault(region, RegionCount())

    def report(self, elapsed_s: float) -> list[tuple[str, str]]:
        """(region, detail) lines: "planning (4 s)" until the plan is known, then per region
        "3/7 created (25 s)", with ", 1 failed" before the time where something failed."""
        elapsed = f"({int(elapsed_s)} s)"
        if not self.planned_known:
            return [(ALL_REGIONS, f"planning {elapsed}")]
        if not self.regions:
            return [(ALL_REGIONS, f"0/0 {self.past}: nothing to change {elapsed}")]
        lines = []
        for region in sorted(self.regions):
            count = self.regions[region]
            failed = f", {count.failed} failed" if count.failed else ""
            lines.append((region, f"{count.done}/{count.planned} {self.past}{failed} {elapsed}"))
        return lines
