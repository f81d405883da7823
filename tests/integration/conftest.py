"""Integration tier: real Maven builds, real Gatling JVMs, the real sample target.

Everything a test needs it starts itself; every JVM it starts is gone when it ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner, Result

from loadorch.metrics.stack import LocalInflux
from loadorch.target.server import TargetConfig, TargetServer

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _prerequisites() -> None:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"integration tests need {', '.join(missing)}; run `make test`, which installs them")


@pytest.fixture
def target() -> Iterator[TargetServer]:
    """A roomy sample target on a free loopback port: it serves the tests' load comfortably."""
    config = TargetConfig(port=0, capacity=256, service_time_ms=1, queue_timeout_ms=2000)
    server = TargetServer(config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[LocalInflux]:
    """A real InfluxDB 1.6.7 (Debian's) on free loopback ports, for one test."""
    if shutil.which("influxd") is None:
        pytest.fail("influxd (InfluxDB 1.6.7) is missing; `make test` installs it (apt-get install influxdb)")
    with LocalInflux(tmp_path / "influxdb") as server:
        yield server


def java_processes(marker: str) -> list[psutil.Process]:
    """Java processes whose command line mentions `marker` (a run directory or id)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "java" in (proc.info["name"] or "") and marker in cmdline:
            found.append(proc)
    return found


def spike_run(
    profile: Path | str, runs_dir: Path | str, *args: str, env: dict[str, str] | None = None
) -> Result:
    """`spike run --profile P --runs-dir D ARGS...` in process, as a user would type it."""
    from loadorch.cli.main import app

    argv = ["run", "--profile", str(profile), "--runs-dir", str(runs_dir), *args]
    return CliRunner().invoke(app, argv, env=env)


def write_profile(
    directory: Path,
    *,
    name: str = "it",
    rate_per_s: float = 40,
    duration_s: int = 15,
    slos: str = "",
    requests_per_user: int = 1,
    missing_post_weight: float = 0,
    regions: str = "  - {name: eu-west-2}\n  - {name: us-east-1}\n",
    max_rate_per_s: float = 1000,
) -> Path:
    """A steps profile at a constant rate, with the sample target's feed and post requests.

    `missing_post_weight` > 0 adds a request for a post that does not exist: a steady trickle of KOs.
    """
    shutil.copyfile(REPO / "loadorch" / "profiles" / "builtin" / "posts.csv", directory / "posts.csv")
    missing = (
        f'    - {{name: missing_post, path: "/posts/999999", weight: {missing_post_weight}}}\n'
        if missing_post_weight
        else ""
    )
    path = directory / f"{name}.yaml"
    path.write_text(
        f"""\
name: {name}
target:
  base_url: http://127.0.0.1:1
baseline_rate_per_s: {rate_per_s}
shape:
  kind: steps
  steps:
    - {{duration_s: {duration_s}, rate_per_s: {rate_per_s}}}
scenario:
  requests_per_user: {requests_per_user}
  requests:
    - {{name: read_feed, path: "/feed?page=1", weight: 3}}
    - {{name: read_post, path: "/posts/{{post_id}}", weight: 1}}
{missing}  feeders:
    - {{name: posts, file: posts.csv}}
regions:
{regions}injector:
  max_rate_per_s: {max_rate_per_s}
{slos}"""
    )
    return path
