"""The lab's pure pieces: the address plan, the console text, settings <-> daemon options, moto glue."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadorch.lab import network
from loadorch.lab.console import HostKey, console_tail, finished_line, host_keys_block
from loadorch.lab.daemon import parse_args
from loadorch.lab.guest import sshd_config
from loadorch.lab.moto_hooks import instance_public_keys, instance_user_data, set_public_ip
from loadorch.lab.state import LabSettings
from loadorch.transport.hostkeys import fingerprint_of_public_key_line, parse_console_fingerprints

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBEuj/TVKKb4ZKPP5xN1SDUm9bpomIqjxyJ5QfBHYM63 root@ip-198-18-1-11"
)


def test_address_plan() -> None:
    assert network.edge_address(1) == "198.18.1.1"
    assert network.host_address(1, 1) == "198.18.1.11"
    assert network.host_address(3, 244) == "198.18.3.254"
    assert network.netns_name("i-0abc") == "spkl-i-0abc"
    assert network.veth_name(254, 244) == "spkl254h244" and len(network.veth_name(254, 244)) <= 15
    assert network.OPERATOR_CIDR == "198.18.0.1/32"
    for bad in ((0, 1), (255, 1)):
        with pytest.raises(ValueError):
            network.host_address(*bad)
    with pytest.raises(ValueError):
        network.host_address(1, 245)


def test_console_blocks_are_what_spike_pins_from() -> None:
    fingerprint = fingerprint_of_public_key_line(ED25519)
    key = HostKey(ED25519, f"256 {fingerprint} root@ip-198-18-1-11 (ED25519)")
    text = "boot noise\n" + host_keys_block([key]) + finished_line("now", 2.5, 0)
    assert parse_console_fingerprints(text) == (fingerprint,)
    lines = text.splitlines()
    assert "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----" in lines
    assert lines.index("-----BEGIN SSH HOST KEY KEYS-----") + 1 == lines.index(ED25519)
    assert "user_data exited with 0" in lines[-1]
    # only the keys block left: the fingerprint is computed from the key itself
    keys_only = text[text.index("-----BEGIN SSH HOST KEY KEYS-----") :]
    assert parse_console_fingerprints(keys_only) == (fingerprint,)


def test_console_tail_keeps_the_last_64_kb_in_whole_lines() -> None:
    text = "".join(f"line {i}\n" for i in range(20000))
    tail = console_tail(text)
    assert len(tail.encode()) <= 64 * 1024
    assert tail.endswith("line 19999\n") and tail.startswith("line ")
    assert console_tail("short\n") == "short\n"


def test_settings_round_trip_through_the_daemon_options() -> None:
    settings = LabSettings(
        state_dir=Path("/tmp/somewhere"),
        port=5123,
        regions=("us-east-1", "eu-west-2"),
        latency_ms={"us-east-1": 40.0, "eu-west-2": 5.0},
        jitter_ms={"us-east-1": 4.0},
        target_port=9090,
        ssh_user="admin",
        rootfs="bind",
    )
    assert parse_args(settings.daemon_argv()) == settings
    quiet = LabSettings(state_dir=Path("/tmp/x"), latency=False)
    assert "--no-latency" in quiet.daemon_argv()
    assert parse_args(quiet.daemon_argv()) == quiet


def test_moto_glue_reads_user_data_and_the_key_pair() -> None:
    from moto.core.types import Base64EncodedString

    instance = SimpleNamespace(
        user_data=Base64EncodedString.from_raw_string("#!/bin/bash\necho hi\n"),
        key_name="k",
        nics={0: SimpleNamespace(public_ip="54.214.1.2")},
    )
    backend = SimpleNamespace(key_pairs={"k": SimpleNamespace(material_public=ED25519.encode())})
    assert instance_user_data(instance) == b"#!/bin/bash\necho hi\n"
    assert instance_user_data(SimpleNamespace(user_data=None)) is None
    assert instance_public_keys(backend, instance) == [ED25519]
    assert instance_public_keys(backend, SimpleNamespace(key_name=None)) == []
    set_public_ip(instance, "198.18.1.11")
    assert instance.nics[0].public_ip == "198.18.1.11"
    assert base64.b64decode(str(instance.user_data)).startswith(b"#!")


def test_sshd_config_listens_on_the_host_only_with_keys_only() -> None:
    config = sshd_config("198.18.2.12").splitlines()
    assert "ListenAddress 198.18.2.12:22" in config
    assert {"UsePAM no", "PasswordAuthentication no", "PermitRootLogin no"} <= set(config)
    assert [line for line in config if line.startswith("HostKey ")] == [
        "HostKey /etc/ssh/ssh_host_ecdsa_key",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
    ]
