"""`spike stack up|status|down` against the real influxd 1.6.7, in a temp root on free ports."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from loadorch.cli import stack as stack_cli
from loadorch.errors import BadInputError, PreflightError
from loadorch.metrics.influx import InfluxSettings, V1Sink
from loadorch.metrics.stack import free_port, influx_query, stack_down, stack_status, stack_up

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("influxd") is None:
        pytest.fail(
            "influxd is not installed: run `make test`, which installs it (apt-get install -y influxdb)"
        )
    yield tmp_path / "stack"
    stack_down(tmp_path / "stack")  # whatever a test left running


def listening_ports(pid: int) -> set[tuple[str, int]]:
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def test_up_status_down_up_cycle(root: Path) -> None:
    port, rpc_port = free_port(), free_port()
    status = stack_up(port=port, rpc_port=rpc_port, root=root)
    assert status.running and status.pid
    assert status.url == f"http://127.0.0.1:{port}"
    assert status.version is not None and status.version.startswith("1.6.7")
    home = root / "influxdb"
    assert status.data_dir == home / "data" and status.data_dir.is_dir()
    assert (home / "meta").is_dir() and (home / "wal").is_dir()
    assert (home / "influxd.pid").read_text().strip() == str(status.pid)
    assert status.log_file.exists()

    # Only our two listeners, both on loopback: no Graphite/UDP/collectd/OpenTSDB, no wildcard bind.
    assert listening_ports(status.pid) == {("127.0.0.1", port), ("127.0.0.1", rpc_port)}
    config = status.config_file.read_text()
    assert "reporting-disabled = true" in config

    databases = influx_query(status.url, "SHOW DATABASES")["results"][0]["series"][0]["values"]
    assert ["spike"] in databases

    again = stack_up(port=port, rpc_port=rpc_port, root=root)
    assert again.running and again.pid == status.pid and "already running" in again.note

    other = stack_up(port=port + 1, rpc_port=rpc_port, root=root)
    assert other.pid == status.pid and "stack down" in other.note

    assert stack_status(root).running and stack_status(root).url == status.url

    # Data written now must survive down/up: the data directory is kept.
    sink = V1Sink(InfluxSettings(url=status.url))
    sink.write(["gatling,run_id=keep count=5.0 1700000000000"])
    sink.close()

    down = stack_down(root)
    assert not down.running and "stopped" in down.note
    assert not _runs(status.pid), "influxd outlived stack down"
    assert not (home / "influxd.pid").exists()
    assert not stack_status(root).running
    assert "was not running" in stack_down(root).note

    back = stack_up(port=port, rpc_port=rpc_port, root=root)
    assert back.running and back.pid != status.pid
    kept = influx_query(back.url or "", "SELECT \"count\" FROM gatling WHERE run_id = 'keep'", db="spike")
    assert kept["results"][0]["series"][0]["values"] == [[1700000000000, 5]]


def test_busy_port_names_the_port_and_the_fix(root: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with pytest.raises(PreflightError) as info:
            stack_up(port=busy, rpc_port=free_port(), root=root)
        text = info.value.render()
        assert f"port {busy}" in text and "already in use" in text and "--port" in text

        with pytest.raises(PreflightError) as info:
            stack_up(port=free_port(), rpc_port=busy, root=root)
        assert f"port {busy}" in info.value.render() and "--rpc-port" in info.value.render()
    assert not stack_status(root).running
    assert not (root / "influxdb" / "influxd.pid").exists()


def test_missing_influxd_says_how_to_install_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(root))  # a directory without influxd
    with pytest.raises(PreflightError) as info:
        stack_up(port=free_port(), rpc_port=free_port(), root=root)
    text = info.value.render()
    assert "apt-get install -y influxdb" in text and "make test" in text


def test_a_stale_pid_file_pointing_at_another_process_is_ignored_not_killed(root: Path) -> None:
    home = root / "influxdb"
    home.mkdir(parents=True)
    (home / "influxd.pid").write_text(f"{os.getpid()}\n")  # pytest itself: must survive
    assert not stack_status(root).running
    assert "was not running" in stack_down(root).note
    assert psutil.pid_exists(os.getpid())
    assert not (home / "influxd.pid").exists()


def test_cli_up_status_down(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI uses state_dir()/stack, i.e. $SPIKE_HOME/stack.
    monkeypatch.setenv("SPIKE_HOME", str(root.parent))
    runner = CliRunner()
    port, rpc_port = free_port(), free_port()

    result = runner.invoke(stack_cli.app, ["up", "--port", str(port), "--rpc-port", str(rpc_port)])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{port}" in result.output and "1.6.7" in result.output
    assert str(root / "influxdb" / "data") in result.output

    result = runner.invoke(stack_cli.app, ["status"])
    assert result.exit_code == 0 and "running" in result.output

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        result = runner.invoke(stack_cli.app, ["up", "--port", str(holder.getsockname()[1])])
    assert (
        result.exit_code == 0 and "already running" in result.output
    )  # idempotent, even if asked differently

    result = runner.invoke(stack_cli.app, ["down"])
    assert result.exit_code == 0 and "stopped" in result.output
    result = runner.invoke(stack_cli.app, ["status"])
    assert result.exit_code == 0 and "stopped" in result.output


def test_cli_busy_port_exits_with_bad_input(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKE_HOME", str(root.parent))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = CliRunner().invoke(stack_cli.app, ["up", "--port", str(busy)])
    assert result.exit_code == 2
    assert f"port {busy}" in result.output


@pytest.mark.parametrize(("port", "rpc_port"), [(0, 8088), (70000, 8088), (18086, 18086)])
def test_bad_ports_are_bad_input(root: Path, port: int, rpc_port: int) -> None:
    with pytest.raises(BadInputError):
        stack_up(port=port, rpc_port=rpc_port, root=root)
    assert not stack_status(root).running


def _runs(pid: int) -> bool:
    """The process still executes: it exists and is not a zombie (ended, only not yet reaped by
    its parent, which is no business of stack down's)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
