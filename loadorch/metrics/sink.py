"""Where metric points go: the Sink protocol every writer (agent, orchestrator) uses.

Implementations live in `influx.py` (InfluxDB v1 `/write` and v2 `/api/v2/write`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loadorch.errors import InfrastructureError, PreflightError


class SinkUnavailable(InfrastructureError):
    """The metrics server cannot be reached right now (connection refused, timeout, 5xx): retry later."""


class SinkRejected(PreflightError):
    """The metrics server refused the data for good (bad credentials, unknown database/bucket, 4xx)."""


class Sink(Protocol):
    """Accepts batches of line-protocol lines with millisecond timestamps."""

    def write(self, lines: Sequence[str]) -> None:
        """Write one batch; raises SinkUnavailable (transient) or SinkRejected (permanent)."""

    def check(self) -> str:
        """Preflight: reach the server and prove the credentials work; returns a description."""

    def close(self) -> None: ...
