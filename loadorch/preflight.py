"""Checks made before any injector starts: where load may go, and what must exist."""

from __future__ import annotations

import http.client
import ipaddress
import shutil
import socket
import subprocess
from urllib.parse import urlsplit

from loadorch.errors import PreflightError, TargetRefusedError
from loadorch.profiles.model import check_base_url

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
TARGET_URL_FIX = (
    "give http://HOST[:PORT] or https://HOST[:PORT] with a port from 1 to 65535, e.g. http://127.0.0.1:8080"
)


def check_target_url(base_url: str) -> str:
    """The target URL, checked (scheme http/https, host, port 1-65535) before any connection or DNS lookup."""
    try:
        return check_base_url(base_url)
    except ValueError as exc:
        raise PreflightError(f"invalid target URL: {exc}", fix=TARGET_URL_FIX) from None


def target_host(base_url: str) -> str:
    check_target_url(base_url)
    host = urlsplit(base_url).hostname
    if not host:  # pragma: no cover - check_target_url refuses it
        raise PreflightError(f"target {base_url!r} has no host", fix="use a URL like http://127.0.0.1:8080")
    return host


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the loopback names; decided without any DNS lookup."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target_allowed(base_url: str, allow_hosts: tuple[str, ...]) -> None:
    """Refuse a target that is neither loopback nor on the allow-list, before any DNS lookup."""
    host = target_host(base_url)
    if is_loopback_host(host):
        return
    if host.lower() in {h.lower() for h in allow_hosts}:
        return
    raise TargetRefusedError(
        f"target host {host!r} is not on loopback and not on the profile's allow-list; no request was sent",
        where=base_url,
        fix=f"if you own {host}, add it to target.allow_hosts in the profile; otherwise aim at 127.0.0.1",
    )


def check_target_reachable(base_url: str, timeout_s: float = 3.0) -> int:
    """One GET of the base URL; any HTTP answer counts. Returns the status."""
    parts = urlsplit(check_target_url(base_url))
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        conn.request("GET", (parts.path or "") + "/", headers={"User-Agent": "spike-preflight"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        raise PreflightError(
            f"target {base_url} is unreachable: {exc}",
            where=base_url,
            fix="start it first (for the sample target: `spike target serve --port 8080`) or pass --target",
        ) from exc
    finally:
        conn.close()


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PreflightError(
                f"port {port} on {host} is busy ({exc.strerror})",
                fix=f"stop what uses it (`ss -ltnp 'sport = :{port}'`) or choose another with --port",
            ) from exc


def java_version(java: str = "java") -> str | None:
    """The `java -version` first line, or None if Java is missing."""
    path = shutil.which(java)
    if not path:
        return None
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stderr or out.stdout).strip().splitlines()
    return text[0] if text else "unknown"


def require_java(java: str = "java") -> str:
    version = java_version(java)
    if version is None:
        raise PreflightError(
            f"Java is missing ({java!r} not found on PATH); Gatling 3.11.5 needs Java 11 or newer",
            fix="install it with `apt-get install -y openjdk-17-jdk-headless` or run `make demo`",
        )
    return version
