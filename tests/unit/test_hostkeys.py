"""Host key fingerprints and pinning, checked against OpenSSH's own `ssh-keygen`."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from loadorch.errors import BadInputError
from loadorch.transport.hostkeys import (
    HostKeyMismatch,
    PinnedHostKeyPolicy,
    fingerprint,
    fingerprint_of_public_key_line,
    generate_client_key,
    normalize_fingerprint,
    parse_console_fingerprints,
)

SSH_KEYGEN = "/usr/bin/ssh-keygen"


def keygen(directory: Path, key_type: str, bits: int | None = None) -> tuple[Path, str, str]:
    """A key made by ssh-keygen: (private key file, public key line, ssh-keygen's SHA256 fingerprint)."""
    path = directory / f"id_{key_type}"
    argv = [
        SSH_KEYGEN,
        "-q",
        "-t",
        key_type,
        "-N",
        "",
        "-C",
        f"root@ip-10-0-0-1 ({key_type})",
        "-f",
        str(path),
    ]
    if bits:
        argv[2:2] = ["-b", str(bits)]
    subprocess.run(argv, check=True, capture_output=True)
    public = Path(f"{path}.pub").read_text().strip()
    listed = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", f"{path}.pub"], check=True, capture_output=True
    )
    return path, public, listed.stdout.decode().split()[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    directory = tmp_path_factory.mktemp("keys")
    return {
        "ed25519": keygen(directory, "ed25519"),
        "ecdsa": keygen(directory, "ecdsa", 256),
        "rsa": keygen(directory, "rsa", 2048),
    }


def test_fingerprints_agree_with_ssh_keygen(keys: dict[str, tuple[Path, str, str]]) -> None:
    for path, public, expected in keys.values():
        assert expected.startswith("SHA256:") and not expected.endswith("=")
        assert fingerprint_of_public_key_line(public) == expected
        assert fingerprint(paramiko.PKey.from_path(path)) == expected


def test_a_public_key_line_must_hold_a_key_of_its_type(keys: dict[str, tuple[Path, str, str]]) -> None:
    _, public, _ = keys["ed25519"]
    data = public.split()[1]
    with pytest.raises(BadInputError, match="not a ssh-rsa key"):
        fingerprint_of_public_key_line(f"ssh-rsa {data}")
    with pytest.raises(BadInputError, match="not valid base64"):
        fingerprint_of_public_key_line("ssh-ed25519 AAAA%%%%")
    with pytest.raises(BadInputError, match="not an OpenSSH public key line"):
        fingerprint_of_public_key_line("ssh-ed25519")


def test_normalize_fingerprint_accepts_openssh_form_only(keys: dict[str, tuple[Path, str, str]]) -> None:
    expected = keys["ed25519"][2]
    assert normalize_fingerprint(f"  sha256:{expected[7:]}=  ") == expected
    with pytest.raises(BadInputError, match="SHA256"):
        normalize_fingerprint("16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48")  # MD5, the old format


BOOT = """\
[    0.000000] Linux version 6.1.0-18-cloud-amd64 (debian-kernel@lists.debian.org)
[    3.181203] cloud-init[412]: Cloud-init v. 22.4.2 running 'init' at Tue, 26 Nov 2024 09:12:31 +0000.
[    3.902113] cloud-init[412]: ci-info: ++++++++++++++++++++Net device info++++++++++++++++++++
[    3.902711] cloud-init[412]: Generating public/private ed25519 key pair.
[    3.903120] cloud-init[412]: The key fingerprint is:
[    3.903118] cloud-init[412]: {ed25519} root@ip-10-0-0-1
"""
FINGERPRINTS_BLOCK = """\
<14>Nov 26 09:12:33 cloud-init: #############################################################
<14>Nov 26 09:12:33 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Nov 26 09:12:33 cloud-init: 256 {ecdsa} root@ip-10-0-0-1 (ECDSA)
<14>Nov 26 09:12:33 cloud-init: 256 {ed25519} root@ip-10-0-0-1 (ED25519)
<14>Nov 26 09:12:33 cloud-init: 2048 {rsa} root@ip-10-0-0-1 (RSA)
<14>Nov 26 09:12:33 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
<14>Nov 26 09:12:33 cloud-init: #############################################################
"""
KEYS_BLOCK = """\
-----BEGIN SSH HOST KEY KEYS-----
{ecdsa_line}
{ed25519_line}
{rsa_line}
-----END SSH HOST KEY KEYS-----
"""
LOGIN = """\
[    4.410000] cloud-init[530]: Cloud-init v. 22.4.2 finished at Tue, 26 Nov 2024 09:12:34 +0000.

Debian GNU/Linux 12 ip-10-0-0-1 ttyS0
"""


def console(keys: dict[str, tuple[Path, str, str]], *blocks: str) -> str:
    """A console as an EC2 instance shows it: boot messages, the given cloud-init blocks, a login prompt."""
    text = BOOT + "".join(blocks) + LOGIN
    return text.format(
        ecdsa=keys["ecdsa"][2],
        ed25519=keys["ed25519"][2],
        rsa=keys["rsa"][2],
        ecdsa_line=keys["ecdsa"][1],
        ed25519_line=keys["ed25519"][1],
        rsa_line=keys["rsa"][1],
    )


def test_console_fingerprints_are_read_from_both_cloud_init_blocks(
    keys: dict[str, tuple[Path, str, str]],
) -> None:
    expected = (keys["ecdsa"][2], keys["ed25519"][2], keys["rsa"][2])
    both = console(keys, FINGERPRINTS_BLOCK, KEYS_BLOCK)
    assert parse_console_fingerprints(both) == expected  # both blocks agree: each key once
    assert parse_console_fingerprints(console(keys, KEYS_BLOCK)) == expected
    assert parse_console_fingerprints(console(keys, FINGERPRINTS_BLOCK)) == expected
    # Older images print every line with the console's "ec2: " prefix, and CRLF line ends.
    prefixed = "\r\n".join(f"ec2: {line}" for line in both.splitlines())
    assert parse_console_fingerprints(prefixed) == expected


def test_a_console_without_the_blocks_yet_gives_nothing() -> None:
    assert parse_console_fingerprints("") == ()
    assert parse_console_fingerprints(BOOT + LOGIN) == ()  # cloud-init has not got that far yet


def test_the_policy_accepts_pinned_keys_and_refuses_others(keys: dict[str, tuple[Path, str, str]]) -> None:
    pinned = paramiko.PKey.from_path(keys["ed25519"][0])
    other = paramiko.PKey.from_path(keys["ecdsa"][0])
    client = paramiko.SSHClient()
    policy = PinnedHostKeyPolicy([keys["ed25519"][2], keys["rsa"][2]])

    policy.missing_host_key(client, "[127.0.0.2]:2222", pinned)
    assert policy.accepted == keys["ed25519"][2]
    assert len(client.get_host_keys()) == 0  # remembers nothing, saves nothing

    with pytest.raises(HostKeyMismatch) as refused:
        policy.missing_host_key(client, "[127.0.0.2]:2222", other)
    message = str(refused.value)
    assert "refusing: possible impostor" in message
    assert keys["ecdsa"][2] in message  # what was presented
    assert keys["ed25519"][2] in message and keys["rsa"][2] in message  # what was expected
    assert isinstance(refused.value, paramiko.SSHException)

    with pytest.raises(HostKeyMismatch, match="none pinned"):
        PinnedHostKeyPolicy([]).missing_host_key(client, "h", pinned)


def test_generated_client_keys_are_private_and_usable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "spike_ed25519"
    public = generate_client_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public.startswith("ssh-ed25519 AAAA")
    derived = subprocess.run(
        [SSH_KEYGEN, "-y", "-f", str(path)], check=True, capture_output=True
    ).stdout.decode()
    assert derived.split()[:2] == public.split()[:2]  # OpenSSH reads the private key and agrees
    assert fingerprint(
        paramiko.Ed25519Key.from_private_key_file(str(path))
    ) == fingerprint_of_public_key_line(public)
    with pytest.raises(BadInputError, match="already exists"):
        generate_client_key(path)
