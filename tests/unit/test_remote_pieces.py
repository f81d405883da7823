"""Pieces of the remote path that need no host: the inventory, the agent zipapp, /proc health."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from loadorch.agent.bundle import MODULES, build_agent_zipapp
from loadorch.agent.health import proc_counters, proc_memory_used_pct
from loadorch.errors import BadInputError, ProfileError
from loadorch.providers.inventory import load_inventory

FINGERPRINT = "SHA256:" + "A" * 43


def inventory(tmp_path: Path, body: str) -> Path:
    (tmp_path / "id_ed25519").write_text("not really a key, only a file\n")
    path = tmp_path / "hosts.yaml"
    path.write_text(body)
    return path


def test_inventory_defaults_and_relative_key_paths(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        f"defaults:\n  key: id_ed25519\n  base_dir: /srv/spike/\nhosts:\n"
        f"  - {{host: 10.0.0.1, region: eu-west-2, host_key: '{FINGERPRINT}'}}\n"
        f"  - {{host: 10.0.0.2, region: us-east-1, port: 2222, user: ops, host_key: 'ssh-ed25519 AAAAC3x'}}\n",
    )
    loaded = load_inventory(path)
    assert loaded.defaults.base_dir == "/srv/spike"
    assert [h.region for h in loaded.hosts] == ["eu-west-2", "us-east-1"]
    assert loaded.hosts[1].port == 2222 and loaded.hosts[1].user == "ops"


def test_inventory_errors_name_file_line_and_the_fix(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        f"defaults:\n  key: id_ed25519\nhosts:\n  - host: 10.0.0.1\n    region: eu-west-2\n"
        f"    host_key: '{FINGERPRINT}'\n    colour: blue\n",
    )
    with pytest.raises(ProfileError) as caught:
        load_inventory(path)
    text = caught.value.render()
    assert f"{path}:7:" in text and "unknown key 'colour'" in text and "valid keys:" in text


def test_an_unpinned_host_key_is_refused(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        "defaults:\n  key: id_ed25519\nhosts:\n  - {host: a, region: eu-west-2, host_key: trust-me}\n",
    )
    with pytest.raises(ProfileError, match="SHA256 fingerprint"):
        load_inventory(path)


def test_a_private_key_inside_the_inventory_is_refused(tmp_path: Path) -> None:
    path = inventory(tmp_path, "hosts: []\nkey: |\n  -----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(BadInputError, match="contains a private key"):
        load_inventory(path)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    path = inventory(
        tmp_path,
        f"defaults:\n  key: nope\nhosts:\n  - {{host: a, region: eu-west-2, host_key: '{FINGERPRINT}'}}\n",
    )
    with pytest.raises(ProfileError, match=r"key file .*nope not found"):
        load_inventory(path)


def test_the_agent_zipapp_runs_on_a_bare_python_and_is_content_addressed(tmp_path: Path) -> None:
    first = build_agent_zipapp(tmp_path)
    assert build_agent_zipapp(tmp_path) == first  # same content, same file
    with zipfile.ZipFile(first) as archive:
        assert sorted(archive.namelist()) == sorted(["__main__.py", *(f"loadorch/{m}" for m in MODULES)])
    # -S -I: no site-packages at all, as on an injector with only the distribution's Python
    result = subprocess.run(
        [sys.executable, "-S", "-I", str(first)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert "usage: spike-agent --config FILE" in result.stdout


def test_health_from_proc(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "stat").write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (tmp_path / "net" / "dev").write_text(
        "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
        "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
        "  eth0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0\n"
    )
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n")
    counters = proc_counters(tmp_path)
    assert counters.cpu_total == 1000 and counters.cpu_busy == 150
    assert (counters.net_recv, counters.net_sent) == (6000, 8000)
    assert proc_memory_used_pct(tmp_path) == 75.0


def test_injectors_with_measured_clock_offsets_merge_on_one_timeline() -> None:
    from loadorch.analysis.simlog import LogAccumulator, merge

    start = 1_700_000_000_000
    # the same instant, 1.9 s after the shared start, read on two clocks 250 ms apart
    record = "REQUEST\t\tget\t{t0}\t{t1}\tOK\t \n"
    behind = LogAccumulator("a", "eu", start, clock_offset_ms=0)
    ahead = LogAccumulator("b", "eu", start, clock_offset_ms=250)
    behind.feed(record.format(t0=start + 1900, t1=start + 1910).encode())
    ahead.feed(record.format(t0=start + 2150, t1=start + 2160).encode())
    for acc in (behind, ahead):
        acc.finish()
    merged = merge([behind, ahead])
    assert merged.requests == 2
    assert [(s.second, s.requests) for s in merged.per_second if s.requests] == [(1, 2)]
