"""The lines a generated simulation prints and the orchestrator waits for: emitted and parsed here.

The template prints each line through these Scala string interpolations (rendered into it), and
the orchestrator reads an injector's console.log with the matching parsers below, so the two
sides cannot drift apart.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

PREFIX = "spike: injector"
# Scala interpolations, rendered verbatim into Simulation.scala
WAITING_SCALA = 's"spike: injector $injectorId waiting for the go signal"'
NO_GO_SCALA = 's"spike: injector $injectorId got no go signal by $startAtMs; ending without load"'
READY_SCALA = 's"spike: injector $injectorId ready, start in $waitMs ms"'
RELEASED_SCALA = 's"spike: injector $injectorId released at ${System.currentTimeMillis()}"'

WAITING = b"waiting for the go signal"
_READY = re.compile(rb"spike: injector \S+ ready, start in (-?\d+) ms")
_RELEASED = re.compile(rb"spike: injector \S+ released at (\d+)")
_HEAD_BYTES = 1 << 16  # the protocol lines come before any load output


def _head(console_log: Path) -> bytes:
    with contextlib.suppress(OSError), console_log.open("rb") as handle:
        return handle.read(_HEAD_BYTES)
    return b""


def is_waiting(console_log: Path) -> bool:
    """The injector booted and waits at its start gate for the go signal."""
    return WAITING in _head(console_log)


def ready_margin_ms(console_log: Path) -> int | None:
    """How long before the shared start the injector was ready (negative: it was late)."""
    match = _READY.search(_head(console_log))
    return int(match.group(1)) if match else None


def release_offset_ms(console_log: Path, start_ms: int) -> int | None:
    """When the injector's start gate opened, on its own clock, against the shared start."""
    match = _RELEASED.search(_head(console_log))
    return int(match.group(1)) - start_ms if match else None
