"""The fleet's clocks against this machine's: refused beyond a bound, and said as measured (pure)."""

from __future__ import annotations

from loadorch.errors import InjectorError
from loadorch.providers.base import ClockCheck

WARN_CLOCK_OFFSET_MS = 50.0  # an offset this large is compensated, but says the host's time sync is off


def check_clock(clock: ClockCheck, max_offset_ms: float, *, compensated: bool) -> str | None:
    """What was measured, for the terminal; raises when a clock is further off than `max_offset_ms`.

    A refused fleet never starts, so the message then says nothing of compensation.
    """
    if not clock.offsets_ms:
        return None
    worst_id, worst = max(clock.offsets_ms.items(), key=lambda item: abs(item[1]))
    if abs(worst) > max_offset_ms:
        raise InjectorError(
            f"clock offset {worst:+.0f} ms against this machine exceeds {max_offset_ms:.0f} ms",
            where=worst_id,
            fix="enable time sync on the injector (chrony/systemd-timesyncd), or raise --max-clock-offset-ms",
        )
    note = "compensated" if compensated else "not compensated"
    warning = "warning: " if abs(worst) > WARN_CLOCK_OFFSET_MS else ""
    return (
        f"{warning}injector clock skew {clock.skew_ms:.1f} ms, worst offset {worst:+.1f} ms ({worst_id}); {note}"
        + ("; check the injectors' time sync" if warning else "")
    )
