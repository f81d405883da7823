"""Stop criteria: end the storm when the target is already down, instead of hammering it to the end.

A criterion holds when its condition is true in every one of its last `for_s` settled
seconds: the error rate or a latency percentile of the responses that started in each
second (exact, from the logs parsed live), or a health URL probed once a second. A second
with no response at all is no evidence either way, so it breaks a streak.

`parse_abort_when` reads the command line's `--abort-when` into the same model as a
profile's `stop_when`.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from pydantic import ValidationError

from loadorch.analysis.stats import percentile
from loadorch.errors import BadInputError
from loadorch.profiles.model import StopCriterion

SETTLE_S = 2  # a second is judged once responses that started in it have had time to be logged

_ABORT = re.compile(
    r"^\s*(?:(?P<err>error[-_ ]?rate)\s*>\s*(?P<rate>[0-9.]+)\s*(?P<pct>%?)"
    r"|p(?P<q>50|75|95|99)\s*>\s*(?P<ms>[0-9]+)\s*ms"
    r"|health\s+(?P<url>\S+))"
    r"\s+for\s+(?P<for>[0-9]+)\s*s\s*$",
    re.IGNORECASE,
)
ABORT_FORMS = "'error-rate>50% for 5s', 'p95>2000ms for 10s' or 'health http://127.0.0.1:8080/health for 10s'"


def parse_abort_when(text: str) -> StopCriterion:
    """One `--abort-when` value as a stop criterion; BadInputError naming the valid forms."""
    match = _ABORT.match(text)
    if match is None:
        raise BadInputError(
            f"--abort-when {text!r} is not a stop criterion", fix=f"write it as {ABORT_FORMS}"
        )
    values: dict[str, object] = {"for_s": int(match["for"])}
    if match["err"]:
        rate = float(match["rate"])
        values["error_rate_above"] = rate / 100 if match["pct"] else rate
    elif match["q"]:
        values.update(latency_percentile=int(match["q"]), latency_above_ms=int(match["ms"]))
    else:
        values["health_url"] = match["url"]
    try:
        return StopCriterion.model_validate(values)
    except ValidationError as exc:
        problem = "; ".join(e["msg"] for e in exc.errors())
        raise BadInputError(f"--abort-when {text!r}: {problem}", fix=f"write it as {ABORT_FORMS}") from None


class HealthProbe:
    """GETs a health URL once a second on its own thread; keeps each second's answer."""

    def __init__(self, url: str, timeout_s: float = 1.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.failing_streak = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spike-health-probe", daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def probe(self) -> str | None:
        """None when healthy, else what was wrong."""
        parts = urlsplit(self.url)
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.hostname or "", parts.port, timeout=self.timeout_s)
        try:
            conn.request("GET", parts.path or "/", headers={"User-Agent": "spike-health"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        return None if status < 400 else f"HTTP {status}"

    def _loop(self) -> None:
        while not self._stop.is_set():
            error = self.probe()
            self.last_error = error
            self.failing_streak = self.failing_streak + 1 if error else 0
            self._stop.wait(1.0)


def per_second_responses(
    latencies: Iterable[Mapping[tuple[int, bytes, int], int]], since: int
) -> dict[int, tuple[Counter[int], int]]:
    """second -> (histogram of every response time, KO count), for seconds >= `since`."""
    out: dict[int, tuple[Counter[int], int]] = defaultdict(lambda: (Counter(), 0))
    for latency in latencies:
        for (second, status, rt), count in list(latency.items()):
            if second < since:
                continue
            hist, ko = out[second]
            hist[rt] += count
            out[second] = (hist, ko + (count if status == b"KO" else 0))
    return out


class StopWatch:
    """Checks every criterion once a tick; `check` returns the one that holds, described."""

    def __init__(self, criteria: Sequence[StopCriterion]) -> None:
        self.criteria = tuple(criteria)
        self.probes = {c.health_url: HealthProbe(c.health_url) for c in self.criteria if c.health_url}
        self.longest_s = max((c.for_s for c in self.criteria), default=0)

    def start(self) -> StopWatch:
        for probe in self.probes.values():
            probe.start()
        return self

    def stop(self) -> None:
        for probe in self.probes.values():
            probe.stop()

    def check(
        self, latencies: Iterable[Mapping[tuple[int, bytes, int], int]], elapsed_s: float
    ) -> str | None:
        """The first criterion that held, with what was seen; None while none does."""
        if not self.criteria:
            return None
        for criterion in self.criteria:
            if criterion.health_url is not None:
                probe = self.probes[criterion.health_url]
                if probe.failing_streak >= criterion.for_s:
                    return f"{criterion.describe()} (last answer: {probe.last_error})"
        newest = int(elapsed_s) - SETTLE_S
        if newest < 0:
            return None
        seconds = per_second_responses(latencies, newest - self.longest_s + 1)
        for criterion in self.criteria:
            if criterion.health_url is not None:
                continue
            window = range(newest - criterion.for_s + 1, newest + 1)
            if window.start < 0 or any(s not in seconds for s in window):
                continue
            if criterion.error_rate_above is not None:
                rates = [seconds[s][1] / sum(seconds[s][0].values()) for s in window]
                if all(rate > criterion.error_rate_above for rate in rates):
                    return f"{criterion.describe()} (seconds {window.start}-{window.stop - 1}: {min(rates):.0%} or more)"
            elif criterion.latency_above_ms is not None:
                values = [percentile(seconds[s][0], criterion.latency_percentile) or 0 for s in window]
                if all(v > criterion.latency_above_ms for v in values):
                    return f"{criterion.describe()} (seconds {window.start}-{window.stop - 1}: {min(values)} ms or more)"
        return None
