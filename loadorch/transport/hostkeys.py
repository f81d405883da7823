"""Host key pinning: spike only talks to an injector whose SSH host key it was told to expect.

Fabric (like a fresh paramiko client with `AutoAddPolicy`) trusts whatever key a server presents,
and ordinary tools trust whatever `~/.ssh/known_hosts` says. Neither is right for injectors: they
are created and destroyed per run, so known_hosts would only grow stale entries, and accepting the
first key blindly means a run can be hijacked by anyone answering on that address. Instead every
host comes with the SHA256 fingerprints it is allowed to present (a static host's from its
operator, an EC2 instance's from the host keys cloud-init prints on its console), and
`PinnedHostKeyPolicy` accepts a server only if its key is one of them. Nothing is written to or read
from any known_hosts file.

Fingerprints are OpenSSH's format, `SHA256:<base64 without padding>`, as `ssh-keygen -lf` prints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from loadorch.errors import BadInputError

KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
KEYS_END = "-----END SSH HOST KEY KEYS-----"
FINGERPRINTS_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
FINGERPRINTS_END = "-----END SSH HOST KEY FINGERPRINTS-----"

_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# The EC2 console prefixes every line it captured from the serial port with a timestamp or
# "ec2: " (older images); the key or fingerprint itself is what follows.
_KEY_LINE = re.compile(r"((?:ssh|ecdsa|sk)-[A-Za-z0-9@._+-]+)\s+([A-Za-z0-9+/]+={0,3})(?:\s|$)")


class HostKeyMismatch(paramiko.SSHException):
    """The server presented a key whose fingerprint is not pinned: never retried, never accepted."""

    def __init__(self, presented: str, key_type: str, expected: tuple[str, ...]) -> None:
        self.presented = presented
        self.key_type = key_type
        self.expected = expected
        wanted = ", ".join(expected) if expected else "(none pinned)"
        super().__init__(
            f"host key mismatch: the server presented {key_type} {presented}, "
            f"but only {wanted} is pinned; refusing: possible impostor"
        )


def normalize_fingerprint(value: str) -> str:
    """`SHA256:abc...` with padding removed; raises BadInputError for anything else (e.g. MD5 hex)."""
    text = value.strip()
    if text.lower().startswith("sha256:"):
        text = "SHA256:" + text[7:]
    text = text.rstrip("=")
    if not _FINGERPRINT.fullmatch(text):
        raise BadInputError(
            f"not a SHA256 host key fingerprint: {value!r}",
            fix="give the OpenSSH form `SHA256:<43 base64 characters>` (`ssh-keygen -lf KEY.pub` prints it)",
        )
    return text


def _fingerprint_of_blob(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def fingerprint(pkey: paramiko.PKey) -> str:
    """The OpenSSH SHA256 fingerprint of a paramiko key (public part only)."""
    return _fingerprint_of_blob(pkey.asbytes())


def fingerprint_of_public_key_line(line: str) -> str:
    """The fingerprint of an OpenSSH public key line, e.g. `ssh-ed25519 AAAA... root@host`.

    Works for any key type (also ones paramiko cannot load): it hashes the decoded key blob,
    after checking that the blob really is a key of the type the line names.
    """
    fields = line.split()
    if len(fields) < 2:
        raise BadInputError(
            f"not an OpenSSH public key line: {line[:60]!r}",
            fix="give a line like `ssh-ed25519 AAAAC3Nza... comment` (the content of a .pub file)",
        )
    key_type, data = fields[0], fields[1]
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInputError(f"the key data of {key_type} is not valid base64: {exc}") from exc
    name_length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if name_length <= 0 or blob[4 : 4 + name_length] != key_type.encode("ascii", "replace"):
        raise BadInputError(
            f"public key line says {key_type} but its data is not a {key_type} key",
            fix="copy the whole line from the .pub file or the console output unchanged",
        )
    return _fingerprint_of_blob(blob)


def _block(lines: list[str], begin: str, end: str) -> Iterable[str]:
    inside = False
    for line in lines:
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            yield line


def parse_console_fingerprints(console_output: str) -> tuple[str, ...]:
    """The host key fingerprints cloud-init printed on an EC2 instance's console, in order, no duplicates.

    Reads both blocks cloud-init writes: `SSH HOST KEY KEYS` (one public key line each; hashed
    here) and `SSH HOST KEY FINGERPRINTS` (lines like `256 SHA256:xxxx root@host (ED25519)`).
    Lines may carry the console's prefixes (`ec2: `, timestamps). Empty when neither block is
    there yet: the instance is still booting, ask again later.
    """
    lines = console_output.replace("\r", "").splitlines()
    found: list[str] = []
    for line in _block(lines, KEYS_BEGIN, KEYS_END):
        match = _KEY_LINE.search(line)
        if match:
            found.append(fingerprint_of_public_key_line(f"{match.group(1)} {match.group(2)}"))
    for line in _block(lines, FINGERPRINTS_BEGIN, FINGERPRINTS_END):
        match = _FINGERPRINT.search(line)
        if match:
            found.append(match.group(0))
    return tuple(dict.fromkeys(found))


class PinnedHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept a server key only if its SHA256 fingerprint is pinned; otherwise raise HostKeyMismatch.

    Installed on a client whose host key stores are empty, paramiko asks this policy about every
    server key, so it is the only gate. It adds nothing to the client's stores and saves nothing.
    """

    def __init__(self, fingerprints: Iterable[str]) -> None:
        self.fingerprints = tuple(normalize_fingerprint(f) for f in fingerprints)
        self.accepted: str | None = None

    def missing_host_key(self, client: Any, hostname: str, key: paramiko.PKey) -> None:
        presented = fingerprint(key)
        if presented not in self.fingerprints:
            raise HostKeyMismatch(presented, key.get_name(), self.fingerprints)
        self.accepted = presented


def generate_client_key(path: Path) -> str:
    """Write a new ed25519 private key (OpenSSH format, mode 0600) to `path`; return its public key line.

    The file is created with 0600 from the start (never world-readable, not even briefly) and
    an existing file is not overwritten.
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise BadInputError(
            f"{path} already exists; spike does not overwrite a private key",
            fix="remove it if it is spike's own old key, or choose another path",
        ) from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    return public.decode("ascii") + " spike"
