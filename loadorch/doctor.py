"""Prerequisite checks for `spike doctor` (reads the machine, changes nothing)."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadorch.engine.gatling.build import GATLING_VERSION, gatling_project
from loadorch.lab.latency import TOXIPROXY_VERSION, find_toxiproxy
from loadorch.paths import build_cache_dir, maven_repository
from loadorch.preflight import java_version


@dataclass(frozen=True)
class Check:
    """One prerequisite: found or not, its version, what needs it, and how to fix it."""

    name: str
    ok: bool
    version: str
    needed_for: str
    fix: str
    required: bool


def _version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def terraform_aws_provider_mirrors() -> list[str]:
    """Filesystem mirrors that hold the hashicorp/aws provider."""
    patterns = [
        "/usr/share/terraform/plugins",
        "/usr/local/share/terraform/plugins",
        str(Path.home() / ".terraform.d/plugins"),
        str(Path.home() / ".local/share/terraform/plugins"),
        "/opt/terraform/plugins",
        "/opt/tf-plugins",
    ]
    found = []
    for base in patterns:
        found += glob.glob(f"{base}/registry.terraform.io/hashicorp/aws/*/linux_amd64")
    return sorted(found)


def run_checks() -> list[Check]:
    checks: list[Check] = []
    java = java_version()
    checks.append(
        Check(
            "java",
            java is not None,
            java or "missing",
            "every injector (Gatling 3.11.5 needs 11+)",
            "apt-get install -y openjdk-17-jdk-headless",
            True,
        )
    )
    mvn = _version(["mvn", "-v"])
    checks.append(
        Check(
            "maven",
            mvn is not None,
            _strip_ansi(mvn or "missing"),
            "compiling simulations",
            "apt-get install -y maven",
            True,
        )
    )
    gatling_jar = (
        maven_repository() / "io/gatling/gatling-app" / GATLING_VERSION / f"gatling-app-{GATLING_VERSION}.jar"
    )
    builds = (
        sorted(p.name for p in build_cache_dir().glob("*") if (p / "ok").is_file())
        if build_cache_dir().is_dir()
        else []
    )
    checks.append(
        Check(
            "gatling build cache",
            gatling_jar.is_file(),
            f"Gatling {GATLING_VERSION} {'in' if gatling_jar.is_file() else 'not yet in'} {maven_repository()}; "
            f"{len(builds)} compiled simulation(s) in {build_cache_dir()}",
            "running without downloads",
            f"mvn -B -q -f {gatling_project() / 'pom.xml'} test-compile dependency:build-classpath (or `make deps`)",
            False,
        )
    )
    checks.append(
        Check(
            "gatling project",
            (gatling_project() / "pom.xml").is_file(),
            str(gatling_project()),
            "compiling simulations",
            "run spike from its repository checkout or set SPIKE_GATLING_PROJECT",
            True,
        )
    )
    terraform = _version(["terraform", "version"])
    mirrors = terraform_aws_provider_mirrors()
    checks.append(
        Check(
            "terraform",
            terraform is not None,
            terraform or "missing",
            "--provider aws (later)",
            "install terraform and the hashicorp/aws provider in a filesystem mirror",
            False,
        )
    )
    checks.append(
        Check(
            "terraform aws provider",
            bool(mirrors),
            mirrors[0] if mirrors else "no filesystem mirror found",
            "--provider aws (later)",
            "place hashicorp/aws under a terraform plugin mirror directory",
            False,
        )
    )
    sshd = "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else shutil.which("sshd")
    checks.append(
        Check(
            "sshd",
            sshd is not None,
            _version([sshd, "-V"]) or "present" if sshd else "missing",
            "SSH test hosts for --provider static (later)",
            "apt-get install -y openssh-server",
            False,
        )
    )
    influxd = _version(["influxd", "version"])
    checks.append(
        Check(
            "influxd",
            influxd is not None,
            influxd or "missing",
            "live metrics (later)",
            "apt-get install -y influxdb",
            False,
        )
    )
    checks.append(toxiproxy_check())
    return checks


def toxiproxy_check() -> Check:
    """toxiproxy-server: the per-region latency of `spike lab` (built by `make toxiproxy`)."""
    binary = find_toxiproxy()
    answer = _version([binary, "-version"]) if binary else None
    # `toxiproxy-server version 2.12.0`; a build without the version linked in says `git`.
    found = answer.rsplit(" ", 1)[-1] if answer and answer.startswith("toxiproxy-server version") else None
    if binary is None or found is None:
        version = f"{binary} does not run as toxiproxy-server" if binary else "missing"
    else:
        version = f"{found} at {binary}"
        if found != TOXIPROXY_VERSION:
            version += f" (spike pins {TOXIPROXY_VERSION})"
    return Check(
        "toxiproxy",
        found is not None,
        version,
        "per-region latency in the lab (spike lab)",
        f"make toxiproxy (builds v{TOXIPROXY_VERSION} into .tools/bin), or set SPIKE_TOXIPROXY",
        False,
    )


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
