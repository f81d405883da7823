"""Fault tier: real `spike run` processes, real signals, real Gatling JVMs, the real sample target.

Each test injects one fault of the fault matrix and checks how the run ends: the exit
code, summary.json, the history entry, the journal, and that no process is left.
The helpers are in `faultkit.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadorch.target.server import TargetConfig, TargetServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    server = TargetServer(
        TargetConfig(port=0, capacity=256, service_time_ms=1, queue_timeout_ms=2000)
    ).start()
    try:
        yield server
    finally:
        server.stop()
