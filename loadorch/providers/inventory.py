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

from loadorch.errors import BadInputError, ProfileError
from loadorch.profiles.loader import parse_yaml_model

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
    host: str = Field(min_length=1)
    region: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    host_key: str = Field(min_length=8)
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key: str | None = None
    base_dir: str | None = None
    java: str | None = None
    python: str | None = None

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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read the inventory: {exc}", where=str(path), fix=FIX) from None
    if "PRIVATE KEY-----" in text:
        raise BadInputError(
            "the inventory contains a private key",
            where=str(path),
            fix="remove it; give `key:` as the path of the key file instead",
        )
    inventory = parse_yaml_model(text, path, Inventory, what="inventory", fix=FIX)
    for index, entry in enumerate(inventory.hosts):
        key = entry.key or inventory.defaults.key
        if key is None:
            raise ProfileError(
                f"hosts[{index}] ({entry.host}): no SSH key",
                where=str(path),
                fix="set `key:` or `defaults.key:`",
            )
        if not key_path(path, key).is_file():
            raise ProfileError(
                f"hosts[{index}] ({entry.host}): key file {key_path(path, key)} not found",
                where=str(path),
                fix="give the path of the private key file (relative paths are from the inventory's folder)",
            )
    return inventory


def key_path(inventory_path: Path, key: str) -> Path:
    """`~` expanded; relative paths are relative to the inventory file."""
    expanded = Path(os.path.expanduser(key))
    return expanded if expanded.is_absolute() else (inventory_path.parent / expanded).resolve()
