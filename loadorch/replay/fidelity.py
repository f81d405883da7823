"""How closely a run of a replay profile followed the recording it came from (pure but for reading).

The recording (`recorded_file`, CSV `second,count`, written by `spike replay import`) is mapped
onto the run's timeline exactly as the profile's curve was: second t becomes t / speedup, and
its count is multiplied by scale x speedup (the same users in less time). Achieved arrivals per
second come from the merged logs. Reported: MAPE over the seconds whose recorded rate is at
least `min_rate` (small rates are dominated by Poisson noise and whole-user rounding), and the
Pearson correlation over the whole run, at the whole-second lag (at most 2 s) that aligns best.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from loadorch.errors import BadInputError
from loadorch.replay.compact import pearson

MIN_RATE_FOR_MAPE = 50.0  # users/s


def read_recorded(path: Path, *, scale: float = 1.0, speedup: float = 1.0) -> list[float]:
    """The recording as users/s for each second of the run."""
    rates: list[float] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            header = next(rows, None)
            if header is None or [h.strip() for h in header[:2]] != ["second", "count"]:
                raise BadInputError(f"{path}:1: expected the header second,count")
            for number, row in enumerate(rows, start=2):
                if not row:
                    continue
                try:
                    second, count = int(row[0]), float(row[1])
                except (ValueError, IndexError):
                    raise BadInputError(
                        f"{path}:{number}: not a second and a count: {','.join(row)!r}"
                    ) from None
                slot = int(second / speedup)
                rates.extend([0.0] * (slot + 1 - len(rates)))
                rates[slot] += count * scale
    except OSError as exc:
        raise BadInputError(f"cannot read the recording {path}: {exc.strerror}") from None
    return rates


def replay_fidelity(
    recorded: Sequence[float],
    achieved: Sequence[float],
    *,
    min_rate: float = MIN_RATE_FOR_MAPE,
    max_lag_s: int = 2,
) -> dict[str, float | int | None]:
    """MAPE (where the recording is at least `min_rate`/s) and correlation, achieved vs recorded.

    A recording's second 0 is its first logged request, not an instant the run can share, so
    the run may sit a second early or late against it: the comparison uses the lag within
    +-`max_lag_s` seconds that correlates best (reported as `lag_s`; positive: the run is late).
    """
    results = []
    for lag in range(-max_lag_s, max_lag_s + 1):
        shifted = list(achieved[lag:]) if lag >= 0 else [0.0] * -lag + list(achieved)
        result = _compare(recorded, shifted, min_rate)
        result["lag_s"] = lag
        results.append(result)
    aligned = [r for r in results if r["correlation"] is not None]
    if results[max_lag_s]["correlation"] is None:  # a flat series: nothing to align on
        return results[max_lag_s]
    return max(aligned, key=lambda r: (r["correlation"] or 0.0, -abs(r["lag_s"] or 0)))


def _compare(
    recorded: Sequence[float], achieved: Sequence[float], min_rate: float
) -> dict[str, float | int | None]:
    n = max(len(recorded), len(achieved))
    rec = [recorded[i] if i < len(recorded) else 0.0 for i in range(n)]
    got = [float(achieved[i]) if i < len(achieved) else 0.0 for i in range(n)]
    errors = [abs(g - r) / r for r, g in zip(rec, got, strict=True) if r >= min_rate]
    correlation = pearson(rec, got)
    return {
        "seconds": n,
        "seconds_in_mape": len(errors),
        "mape_pct": round(100 * sum(errors) / len(errors), 3) if errors else None,
        "correlation": None if correlation is None else round(correlation, 5),
        "min_rate_for_mape": min_rate,
    }
