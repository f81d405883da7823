"""Shared by every tier.

- `tests/fakes/` (stand-ins for what cannot run here, e.g. Grafana) is importable.
- Terminal width is fixed, so tables render the same under any terminal or CI log
  (rich reads COLUMNS when its consoles are created at import).
- Gatling's JVMs compile with C1 only (`SPIKE_JVM_OPTIONS`, unless set): the suite's runs last
  seconds, and C2 compiling the same hot code in every one of them cost a third of the suite's CPU.
  `bench/` measures the default JIT.
"""

import multiprocessing
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["COLUMNS"] = "120"
os.environ.setdefault("SPIKE_JVM_OPTIONS", "-XX:TieredStopAtLevel=1")
sys.path.insert(0, str(Path(__file__).parent / "fakes"))

# Runs started through the CLI record themselves in the run history: never in the user's own.
os.environ["SPIKE_HISTORY_DB"] = str(Path(tempfile.mkdtemp(prefix="spike-test-history-")) / "history.sqlite")


def _cpu_hog() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


@pytest.fixture(scope="session", autouse=True)
def _cpu_hogs() -> Iterator[None]:
    """`SPIKE_TEST_CPU_HOGS=N pytest`: the whole suite runs on a machine kept busy by N spinning processes.

    The suite must pass loaded as well as quiet (tests wait for states, never for fixed sleeps);
    this is how that is checked. The hogs end with the session (and with pytest, if it is killed).
    """
    count = int(os.environ.get("SPIKE_TEST_CPU_HOGS", "0") or 0)
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        count = 0  # with several workers, the first one starts the hogs for the whole machine
    hogs = [multiprocessing.Process(target=_cpu_hog, daemon=True) for _ in range(count)]
    for hog in hogs:
        hog.start()
    if hogs:
        print(f"\nspike tests: {count} CPU hog(s) running for this session", file=sys.stderr)
    try:
        yield
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join(timeout=5)


_TESTS = Path(__file__).resolve().parent
_LAB = _TESTS / "lab"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For `--dist loadgroup` (make test): a test file is a group, run whole on one worker, except
    the lab tier, whose files are one group (one lab runs on a machine at a time, so they take
    turns anyway) that goes first, being the longest."""
    for item in items:
        lab = item.path.is_relative_to(_LAB)
        item.add_marker(pytest.mark.xdist_group("lab" if lab else str(item.path.relative_to(_TESTS))))
    items.sort(key=lambda item: not item.path.is_relative_to(_LAB))
