"""The lab's settings and its state directory, shared by the daemon, the client and the CLI.

State dir layout (default ~/.cache/spike/lab, or $SPIKE_HOME/lab):

    lab.json            written by the daemon once it is ready: pid, endpoint, regions
                        (number, edge address, latency), target port, ssh user; removed at stop
    daemon.pid          the daemon's pid, from its first moment
    daemon.log          the daemon's output (moto's request log, host events)
    startup-error.txt   why the daemon could not start (read by `lab up`)
    latency/            the latency proxy's files (toxiproxy's log)
    hosts/<instance>/   one host: guest.json (its init's config), user-data (0600), upper/ and
                        work/ (its copy-on-write layer: everything the host wrote), root/ (the
                        merged mount point, empty from outside), console.log, status.json,
                        guest.log; removed when the instance terminates

Only one lab runs on a machine at a time (the network plan is fixed): the daemon holds an
exclusive lock on /run/spike-lab.lock while it runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadorch.paths import state_dir as spike_state_dir

DEFAULT_PORT = 5000
DEFAULT_REGIONS: tuple[str, ...] = ("eu-west-2", "us-east-1", "ap-southeast-1")
DEFAULT_TARGET_PORT = 8080
DEFAULT_SSH_USER = "ec2-user"
MACHINE_LOCK = Path("/run/spike-lab.lock")  # held by the running daemon
TURN_LOCK = Path("/run/spike-lab-turn.lock")  # held by a lab user (control.MachineTurn) from up to down
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def default_state_dir() -> Path:
    return spike_state_dir() / "lab"


@dataclass(frozen=True)
class LabSettings:
    """How `spike lab up` starts the lab. `latency_ms`: region -> added round-trip ms (regions
    not named get `latency.DEFAULT_LATENCY_MS`), `jitter_ms` its ± jitter; `latency=False` runs
    without the latency proxy."""

    state_dir: Path = field(default_factory=default_state_dir)
    port: int = DEFAULT_PORT
    regions: tuple[str, ...] = DEFAULT_REGIONS
    latency_ms: dict[str, float] = field(default_factory=dict)
    jitter_ms: dict[str, float] = field(default_factory=dict)
    target_port: int = DEFAULT_TARGET_PORT
    ssh_user: str = DEFAULT_SSH_USER
    latency: bool = True
    rootfs: str = "auto"  # overlay, bind (the fallback), or auto: overlay where this kernel can

    def daemon_argv(self) -> list[str]:
        """The daemon's options for these settings (`python -m loadorch.lab.daemon ...`)."""
        argv = [
            "--state-dir", str(self.state_dir),
            "--port", str(self.port),
            "--regions", ",".join(self.regions),
            "--target-port", str(self.target_port),
            "--ssh-user", self.ssh_user,
            "--rootfs", self.rootfs,
        ]  # fmt: skip
        if self.latency_ms:
            argv += ["--latency", ",".join(self._latency_item(name) for name in self.latency_ms)]
        if not self.latency:
            argv.append("--no-latency")
        return argv

    def _latency_item(self, region: str) -> str:
        jitter = self.jitter_ms.get(region)
        return f"{region}={self.latency_ms[region]:g}" + (f"/{jitter:g}" if jitter else "")


@dataclass(frozen=True)
class LabPaths:
    root: Path

    @property
    def lab_json(self) -> Path:
        return self.root / "lab.json"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def startup_error(self) -> Path:
        return self.root / "startup-error.txt"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def latency(self) -> Path:
        return self.root / "latency"

    def read_info(self) -> dict[str, Any] | None:
        """lab.json, or None when the lab is not (yet) up."""
        try:
            data = json.loads(self.lab_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_info(self, info: dict[str, Any]) -> None:
        tmp = self.lab_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.lab_json)

    def daemon_pid(self) -> int | None:
        """The pid in daemon.pid if that process is alive and is a lab daemon."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"loadorch.lab.daemon" in cmdline else None


def aws_env(endpoint: str, region: str) -> dict[str, str]:
    """What boto3, the AWS CLI and Terraform need to talk to the lab's moto."""
    return {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": region, "AWS_ENDPOINT_URL": endpoint}
