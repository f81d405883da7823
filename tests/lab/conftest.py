"""Lab tier: the real lab daemon (moto in-process with hooks), real network namespaces, real sshd,
real user_data, real Terraform where the mirror is there.

One lab runs on a machine at a time (fixed network plan); every test takes its turn with
`loadorch.lab.control.MachineTurn` (`Lab` does), so test files on parallel workers, and other
tiers' lab tests, take turns. Every test cleans up what it
made; the fixture's teardown is `lab down`, which also sweeps what a killed daemon left.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadorch.lab.control import Lab, LabClient
from loadorch.lab.state import LabSettings
from loadorch.transport.hostkeys import generate_client_key

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
USER_DATA_TEMPLATE = REPO / "terraform" / "modules" / "injector-fleet" / "user_data.sh.tftpl"


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, a bridge, mounts)"
    for program in ("ip", "unshare", "/usr/sbin/sshd", "ssh-keygen", "useradd"):
        if shutil.which(program) is None and not os.access(program, os.X_OK):
            return f"the lab needs {program}"
    probe = f"spkl-pytest-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"network namespaces do not work here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


_REASON = lab_unavailable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every item of the session: only this tier's are marked (and maybe skipped).
    mine = [item for item in items if item.path.is_relative_to(HERE)]
    if _REASON is not None and mine:
        print(f"\nlab tests skipped: {_REASON}")
    for item in mine:
        item.add_marker(pytest.mark.integration)
        if _REASON is not None:
            item.add_marker(pytest.mark.skip(reason=_REASON))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_settings(state_dir: Path, *, latency: bool, regions: tuple[str, ...]) -> LabSettings:
    return LabSettings(
        state_dir=state_dir, port=free_port(), regions=regions, latency=latency, target_port=free_port()
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab without the latency proxy (test_lab_regions_latency.py starts one with it)."""
    settings = lab_settings(
        tmp_path_factory.mktemp("lab") / "state", latency=False, regions=("eu-west-2", "us-east-1")
    )
    with Lab(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(private key file, public key line) of the operator."""
    path = tmp_path_factory.mktemp("key") / "id_ed25519"
    return path, generate_client_key(path)


def ec2(lab: Lab, region: str) -> Any:
    import boto3

    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=lab.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
    )


def bootstrap_user_data(run_id: str, region: str, ttl_minutes: int = 60) -> str:
    """The module's real user_data template, rendered as Terraform's templatefile would."""
    values = {
        "run_id": run_id,
        "region_label": region,
        "ttl_minutes": str(ttl_minutes),
        "injector_workdir": "/opt/spike",
        "ssh_user": "ec2-user",
    }
    text = USER_DATA_TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, "a template variable was left unrendered"
    return text


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


def netns_names() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def lab_links() -> list[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = [line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()]
    return [name for name in names if name.startswith("spkl")]


def client_of(lab: Lab) -> LabClient:
    return lab.client
