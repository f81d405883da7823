"""Throwaway metrics servers for the test suites (not used by the CLI).

`LocalInflux` (influxd 1.6.7) lives in `stack.py`, next to the code it shares with
`spike stack`; `LocalVictoriaMetrics` is here. VictoriaMetrics stands in for an
InfluxDB 2.x/3.x server: it accepts line protocol on /api/v2/write exactly as
influxdb-client sends it, and stores each field as a series named
`<measurement>_<field>` with the tags as labels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import urllib3

from loadorch.errors import InfrastructureError, PreflightError
from loadorch.metrics.stack import (
    LOOPBACK,
    LocalInflux,
    ThrowawayServer,
    free_port,
    wait_until_ready,
)
from loadorch.process import Command, spawn

__all__ = ["LocalInflux", "LocalVictoriaMetrics"]


class LocalVictoriaMetrics(ThrowawayServer):
    """A throwaway `victoria-metrics` under `root` on 127.0.0.1; port 0 picks a free port.

    `basic_auth=(user, password)` turns on its -httpAuth.* so tests can see a real 401.
    """

    def __init__(
        self,
        root: Path,
        port: int = 0,
        *,
        basic_auth: tuple[str, str] | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.requested_port = port
        self.basic_auth = basic_auth
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_file = self.root / "victoria-metrics.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _headers(self) -> dict[str, str]:
        if self.basic_auth is None:
            return {}
        return urllib3.make_headers(basic_auth=f"{self.basic_auth[0]}:{self.basic_auth[1]}")

    def start(self) -> LocalVictoriaMetrics:
        binary = shutil.which("victoria-metrics")
        if binary is None:
            raise PreflightError(
                "victoria-metrics is not installed",
                fix="apt-get install -y victoria-metrics (as root); `make test` installs it for you",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between picking and binding; pick again a few times.
        attempts = 3 if self.requested_port == 0 else 1
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            argv = [
                binary,
                f"-storageDataPath={self.root / 'data'}",
                f"-httpListenAddr={LOOPBACK}:{self.port}",
            ]
            if self.basic_auth is not None:
                argv += [
                    f"-httpAuth.username={self.basic_auth[0]}",
                    f"-httpAuth.password={self.basic_auth[1]}",
                ]
            # a throwaway server must not outlive a crashed test run: it dies with its parent
            self.process = spawn(
                Command(tuple(argv)), output=self.log_file, append=True, what="victoria-metrics"
            )
            try:
                # /health answers 200 "OK" (401 when -httpAuth is on, which also means it is up).
                wait_until_ready(
                    self.process,
                    f"{self.url}/health",
                    self.log_file,
                    "victoria-metrics",
                    self.startup_timeout_s,
                )
            except PreflightError:
                self.stop()
                if attempt == attempts - 1:
                    raise
                continue
            break
        return self

    def _request(self, method: str, path: str, fields: dict[str, str] | None = None) -> Any:
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=10))
        try:
            resp = http.request(method, f"{self.url}{path}", fields=fields, headers=self._headers())
        finally:
            http.clear()
        if resp.status >= 300:
            raise InfrastructureError(f"victoria-metrics {path} answered {resp.status}: {resp.data[:300]!r}")
        return resp

    def flush(self) -> None:
        """Make just-written samples visible to queries (VictoriaMetrics buffers them ~1 s)."""
        self._request("GET", "/internal/force_flush")

    def export(self, match: str, *, expect_series: int = 1, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """/api/v1/export for a series selector: one dict per series (metric, values, timestamps).

        VictoriaMetrics acknowledges a write before the rows reach storage (they wait in an
        insert buffer for about a second), so this polls until `expect_series` series show up
        or `timeout_s` passes, and then returns what it has.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            resp = self._request("POST", "/api/v1/export", {"match[]": match})
            rows = [json.loads(row) for row in resp.data.decode("utf-8").splitlines() if row.strip()]
            if len(rows) >= expect_series or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
