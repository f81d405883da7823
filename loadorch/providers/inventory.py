"""The static provider's inventory: existing SSH hosts that become injectors.

    defaults:
      user: spike
      key: ~/.ssh/spike_injectors      # a private key FILE; never the key itself
      base_dir: /var/tmp/spike         # spike's cache and run folders on each host
    hosts:
      - host: 10.1.0.11
        region: eu-west-2              # a label; the plan's regions must all have hosts
        host_key: SHA256:3f0Z...       # pinned: its fingerprint, or its public key line
      - host: injector-2.example.internal
        port: 2222
        region: us-east-1
        host_key: ssh-ed25519 AAAAC3Nza...

Every host's key is pinned in the file: spike never trusts a key on first use. Errors name
file:line:column like a profile's.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loadorch.errors import BadInputError, PreflightError, ProfileError
from loadorch.profiles.loader import Positions, parse_yaml_model_with_positions, read_text_file
from loadorch.profiles.model import REGION_NAME, check_host

FIX = "see the inventory example in the README (`--provider static --hosts FILE`)"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostDefaults(_Model):
    user: str = "root"
    key: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    base_dir: str = "/var/tmp/spike"
    java: str = "java"
    python: str = "python3"

    @field_validator("base_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("base_dir must be an absolute path on the host")
        return value.rstrip("/") or "/"


class HostEntry(_Model):
    host: str = Field(min_length=1, description="a host name or an IP address, no port (see `port`)")
    region: str = Field(min_length=1, pattern=REGION_NAME)
    host_key: str = Field(min_length=8)
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key: str | None = None
    base_dir: str | None = None
    java: str | None = None
    python: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        return check_host(value)

    @field_validator("host_key")
    @classmethod
    def _pinned(cls, value: str) -> str:
        value = value.strip()
        if not (value.startswith("SHA256:") or value.startswith(("ssh-", "ecdsa-"))):
            raise ValueError(
                "host_key is the host's SHA256 fingerprint (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)"
                " or its public key line"
            )
        return value


class Inventory(_Model):
    defaults: HostDefaults = HostDefaults()
    hosts: list[HostEntry] = Field(min_length=1)


def load_inventory(path: Path) -> Inventory:
    """The inventory, validated: every host's key file exists (file:line:column errors)."""
    return read_inventory(path)[0]


def read_inventory(path: Path) -> tuple[Inventory, Positions]:
    """`load_inventory`, plus where each value is in the file (for later checks' errors)."""
    text = read_text_file(path, what="inventory", fix=FIX)
    if "PRIVATE KEY-----" in text:
        at = text.index("PRIVATE KEY-----")
        line_start = text.rfind("\n", 0, at) + 1
        begin = text.find("-----BEGIN", line_start, at)
        raise BadInputError(
            "the inventory contains a private key",
            where=f"{path}:{text.count(chr(10), 0, at) + 1}:{(begin if begin >= 0 else line_start) - line_start + 1}",
            fix="remove it; give `key:` as the path of the key file instead",
        )
    inventory, positions = parse_yaml_model_with_positions(text, path, Inventory, what="inventory", fix=FIX)
    for index, entry in enumerate(inventory.hosts):
        key = entry.key or inventory.defaults.key
        given_at = ("hosts", index, "key") if entry.key else ("defaults", "key")
        if key is None:
            line, col = positions.value(("hosts", index))
            raise ProfileError(
                f"hosts[{index}] ({entry.host}): no SSH key",
                where=f"{path}:{line}:{col}",
                fix="set `key:` on the host or `defaults.key:` (the path of the private key file)",
            )
        if not key_path(path, key).is_file():
            line, col = positions.value(given_at)
            raise ProfileError(
                f"hosts[{index}] ({entry.host}): key file {key_path(path, key)} not found",
                where=f"{path}:{line}:{col}",
                fix="give the path of the private key file (relative paths are from the inventory's folder)",
            )
    return inventory, positions


def check_key_files(path: Path, inventory: Inventory, positions: Positions) -> None:
    """Every host's key file is readable and holds a private key (not the .pub half); no connection made."""
    for index, entry in enumerate(inventory.hosts):
        key = key_path(path, entry.key or inventory.defaults.key or "")
        line, col = positions.value(("hosts", index, "key") if entry.key else ("defaults", "key"))
        where = f"{path}:{line}:{col}"
        try:
            with key.open("rb") as handle:
                head = handle.read(64)
        except OSError as exc:
            raise PreflightError(
                f"hosts[{index}] ({entry.host}): cannot read the key file {key}: {exc.strerror}",
                where=where,
                fix="make the file readable by this user (`chmod 600`, owned by you)",
            ) from None
        if head.startswith((b"ssh-", b"ecdsa-", b"sk-")):
            raise PreflightError(
                f"hosts[{index}] ({entry.host}): {key} is a public key",
                where=where,
                fix=f"give the private key file (probably {key.with_suffix('')})"
                if key.suffix == ".pub"
                else "give the private key file, not its .pub half",
            )
        if not head.lstrip().startswith(b"-----BEGIN ") or b"PRIVATE KEY" not in head:
            raise PreflightError(
                f"hosts[{index}] ({entry.host}): {key} does not hold an OpenSSH or PEM private key",
                where=where,
                fix="give the private key file (`ssh-keygen -t ed25519 -f FILE` makes one)",
            )


def key_path(inventory_path: Path, key: str) -> Path:
    """`~` expanded; relative paths are relative to the inventory file."""
    expanded = Path(os.path.expanduser(key))
    return expanded if expanded.is_absolute() else (inventory_path.parent / expanded).resolve()
