"""A run's journal and lock: what a killed run had done, and whether anyone is still running it.

The journal (`journal.jsonl`) gets one line per phase from the moment the run id
exists; the lock (`lock`, an flock held by the live orchestrator for the whole
run) is released by the kernel when that process dies, however it dies. A run
directory whose journal does not end in `finished` and whose lock nobody holds
was left by a spike that died: `spike runs recover` finishes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from loadorch.run.layout import RunLayout

FINISHED = "finished"


class Journal:
    """Appends phases to a run's journal; each line is flushed before the phase goes on."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout

    def record(self, phase: str, **details: Any) -> None:
        entry = {"phase": phase, "at_ms": int(time.time() * 1000), "pid": os.getpid(), **details}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        # a full disk must not turn into a crash of the run that is trying to stop cleanly
        with contextlib.suppress(OSError), self.layout.journal.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


def read_journal(layout: RunLayout) -> list[dict[str, Any]]:
    """Every entry that was written whole (a torn last line from a crash is skipped)."""
    entries: list[dict[str, Any]] = []
    with contextlib.suppress(OSError), layout.journal.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
    return entries


def last_entry(entries: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    return next((e for e in reversed(entries) if e.get("phase") == phase), None)


class RunLock:
    """The live orchestrator's claim on a run directory (held until the process ends)."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self._handle: TextIO | None = None

    def acquire(self) -> RunLock:
        handle = self.layout.lock.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


def lock_is_held(layout: RunLayout) -> bool:
    """True while a live spike holds the run's lock."""
    try:
        handle = layout.lock.open("r", encoding="utf-8")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@dataclass(frozen=True)
class RunEntry:
    """A run directory and its state: running, finished or unfinished (its spike died)."""

    layout: RunLayout
    state: str
    last_phase: str | None
    started_ms: int | None


def run_entry(layout: RunLayout) -> RunEntry:
    entries = read_journal(layout)
    last = entries[-1]["phase"] if entries else None
    started = entries[0].get("at_ms") if entries else None
    if lock_is_held(layout):
        state = "running"
    elif last == FINISHED or (not entries and layout.summary.is_file()):
        state = "finished"  # runs from before journals existed have a summary and nothing else
    else:
        state = "unfinished"
    return RunEntry(layout, state, last, started)


def run_entries(runs_dir: Path) -> Iterator[RunEntry]:
    """Every run directory under `runs_dir`, newest first."""
    if not runs_dir.is_dir():
        return
    dirs = [
        p
        for p in runs_dir.iterdir()
        if p.is_dir() and ((p / "plan.json").exists() or (p / "journal.jsonl").exists())
    ]
    for path in sorted(dirs, key=lambda p: p.stat().st_mtime, reverse=True):
        yield run_entry(RunLayout(path.resolve()))
