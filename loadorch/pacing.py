"""`Every`: says when a periodic thing (a progress line, a heartbeat) is due, on the monotonic clock.

    beat = Every(10.0)
    while waiting:
        if beat.due():
            progress(f"{done}/{total}, {beat.elapsed_s:.0f} s")

The first `due()` is True (say something at once), then once per `period_s`. Long phases use it so
that they are never silent for longer than the period.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

PROGRESS_EVERY_S = 10.0  # no long phase stays silent longer than this


class Every:
    def __init__(
        self, period_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.period_s = period_s
        self.clock = clock
        self.started = clock()
        self._last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self._last is None or now - self._last >= self.period_s:
            self._last = now
            return True
        return False

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started


@contextlib.contextmanager
def ticking(say: Callable[[float], None], period_s: float = PROGRESS_EVERY_S) -> Iterator[None]:
    """Call `say(elapsed_s)` every `period_s` from a thread while the block runs (a blocking call
    that cannot report its own progress: connecting to booting hosts, a large upload)."""
    stop = threading.Event()
    started = time.monotonic()

    def loop() -> None:
        while not stop.wait(period_s):
            say(time.monotonic() - started)

    thread = threading.Thread(target=loop, name="spike-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=period_s)
