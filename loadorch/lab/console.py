"""What a lab host prints on its serial console, the way cloud-init does on EC2 (pure text).

EC2's GetConsoleOutput shows what the instance wrote to its serial console. On the images the
injector module uses, cloud-init's `keys-to-console` module writes there, after user_data has
run: the host key fingerprints between `-----BEGIN SSH HOST KEY FINGERPRINTS-----` and
`-----END ...-----` (lines prefixed `ec2: ` on Amazon Linux, as `ssh-keygen -l` prints them), then
the public keys between `-----BEGIN SSH HOST KEY KEYS-----` and `-----END ...-----`. spike pins
the host keys from exactly these blocks (`loadorch.transport.hostkeys.parse_console_fingerprints`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FINGERPRINTS_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
FINGERPRINTS_END = "-----END SSH HOST KEY FINGERPRINTS-----"
KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
KEYS_END = "-----END SSH HOST KEY KEYS-----"
EC2_CONSOLE_LIMIT = 64 * 1024  # GetConsoleOutput returns the most recent 64 KB


@dataclass(frozen=True)
class HostKey:
    """One SSH host key: its public line (`ssh-ed25519 AAAA... root@host`) and what
    `ssh-keygen -l -E sha256 -f` says about it (`256 SHA256:... root@host (ED25519)`)."""

    public_line: str
    fingerprint_line: str


def boot_lines(instance_id: str, region: str, hostname: str, address: str) -> str:
    """The first lines of a lab host's console: which instance boots where."""
    return (
        f"spike lab: booting {instance_id} in {region} as {hostname} ({address})\n"
        f"spike lab: network namespace host, copy-on-write root, sshd and cloud-init emulated\n"
        f"cloud-init: running modules for init: hostname, users, ssh host keys\n"
    )


def host_keys_block(keys: Sequence[HostKey]) -> str:
    """The two blocks cloud-init's keys-to-console writes, exactly as Amazon Linux shows them."""
    lines = ["ec2: ", "ec2: " + "#" * 61, f"ec2: {FINGERPRINTS_BEGIN}"]
    lines += [f"ec2: {key.fingerprint_line.strip()}" for key in keys]
    lines += [f"ec2: {FINGERPRINTS_END}", "ec2: " + "#" * 61, KEYS_BEGIN]
    lines += [key.public_line.strip() for key in keys]
    lines += [KEYS_END]
    return "\n".join(lines) + "\n"


def finished_line(when_utc: str, uptime_s: float, user_data_exit: int | None) -> str:
    """cloud-init's last word: when it finished and how user_data ended."""
    result = "no user_data" if user_data_exit is None else f"user_data exited with {user_data_exit}"
    return (
        f"cloud-init (spike lab emulation) finished at {when_utc}. "
        f"Datasource spike-lab ({result}).  Up {uptime_s:.2f} seconds\n"
    )


def console_tail(text: str, limit: int = EC2_CONSOLE_LIMIT) -> str:
    """What GetConsoleOutput returns of a console: at most its last `limit` bytes, whole lines."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    cut = data[-limit:]
    newline = cut.find(b"\n")
    if newline >= 0:
        cut = cut[newline + 1 :]
    return cut.decode("utf-8", "replace")
