"""Ctrl-C, SIGTERM and SIGHUP during a run: the first stops the load, later ones cannot stop the cleanup.

The first signal raises KeyboardInterrupt where the run is; from then on the run is
*shielded*: further signals are counted (a second one means "hurry": no graceful
waits) but raise nothing, so collecting, judging, writing the summary and tearing
down always finish. A closed terminal (SIGHUP) is an interrupt like any other.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    def __init__(self) -> None:
        self.received: list[str] = []
        self.shielded = False
        self.deferring = False

    @property
    def forced(self) -> bool:
        """A second signal arrived: skip graceful waits (still collect what is on disk)."""
        return len(self.received) >= 2

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        if not self.deferring and not self.shielded:
            self.shielded = True
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal inside waits for `raise_deferred`: what the block writes is written whole."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def raise_deferred(self) -> None:
        """The interrupt a deferred block held back, raised now (where it is handled)."""
        if self.received and not self.shielded:  # unshielded, only a deferred signal is counted
            self.shielded = True
            raise KeyboardInterrupt

    def shield(self) -> None:
        """From now on signals are only counted."""
        self.shielded = True

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle the signals for the duration (only possible on the main thread; elsewhere: no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous: dict[signal.Signals, Any] = {}
        for sig in HANDLED:
            previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
