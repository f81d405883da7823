"""The SSH transport against real OpenSSH servers on 127.0.0.2, 127.0.0.3, ... (see sshd.py).

Nothing is mocked: every test starts its own sshd hosts under tmp_path and stops them at the end.
"""

from __future__ import annotations

import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sshd import SshdHost, start_hosts

from loadorch.errors import BadInputError
from loadorch.transport import (
    KILLED_WITHOUT_STATUS,
    Deadman,
    PinnedHostKeyPolicy,
    SshFleet,
    SshHost,
    TransportError,
    fingerprint_of_public_key_line,
    generate_client_key,
)


@pytest.fixture
def client_key(tmp_path: Path) -> tuple[Path, str]:
    """The operator's key: (private key file, public key line)."""
    path = tmp_path / "operator" / "id_ed25519"
    return path, generate_client_key(path)


@pytest.fixture
def hosts(tmp_path: Path, client_key: tuple[Path, str]) -> Iterator[list[SshdHost]]:
    started = start_hosts(tmp_path / "hosts", 3, client_key[1])
    try:
        yield started
    finally:
        for host in started:
            host.stop()


def ssh_hosts(hosts: list[SshdHost], key: Path, **pins: tuple[str, ...]) -> list[SshHost]:
    """inj-1, inj-2, ... pinned to their real host keys unless `pins` says otherwise."""
    return [
        SshHost(
            name=f"inj-{i}",
            address=host.address,
            port=host.port,
            key_path=key,
            host_key_fingerprints=pins.get(f"inj_{i}", (host.host_fingerprint,)),
        )
        for i, host in enumerate(hosts, start=1)
    ]


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.1)


def test_run_put_read_fetch_and_list_on_three_hosts(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    work = tmp_path / "remote"  # the hosts are this machine: remote paths are local paths too
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("alpha\n")
    (local / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (local / "sub" / "run.sh").chmod(0o755)

    with SshFleet(ssh_hosts(hosts, client_key[0])) as fleet:
        fleet.connect()
        results = fleet.run("echo $((6 * 7)); echo to-stderr >&2")
        assert set(results) == {"inj-1", "inj-2", "inj-3"}
        assert all(
            r.exit_code == 0 and r.stdout == "42\n" and r.stderr == "to-stderr\n" for r in results.values()
        )
        per_host = fleet.run({"inj-1": "echo one", "inj-3": "echo three"})
        assert {name: r.stdout for name, r in per_host.items()} == {"inj-1": "one\n", "inj-3": "three\n"}

        fleet.put(
            {
                name: [
                    (local / "a.txt", f"{work}/{name}/a.txt"),
                    (local / "sub/run.sh", f"{work}/{name}/bin/run.sh"),
                ]
                for name in fleet.names
            }
        )
        assert (work / "inj-2" / "a.txt").read_text() == "alpha\n"
        assert fleet.run({"inj-2": f"{work}/inj-2/bin/run.sh"})["inj-2"].stdout == "ran\n"  # mode kept
        assert fleet.listdir("inj-2", f"{work}/inj-2") == ["a.txt", "bin"]
        assert fleet.listdir("inj-2", f"{work}/nothing-here") == []

        log = f"{work}/inj-1/growing.log"
        assert fleet.read_from("inj-1", log, 0) == b""  # not there yet
        fleet.run({"inj-1": f"printf 'first\\n' >> {log}"})
        chunk = fleet.read_from("inj-1", log, 0)
        assert chunk == b"first\n"
        fleet.run({"inj-1": f"printf 'second\\nthird\\n' >> {log}"})
        assert fleet.read_from("inj-1", log, len(chunk)) == b"second\nthird\n"
        assert fleet.read_from("inj-1", log, len(chunk), limit=3) == b"sec"
        assert fleet.read_from("inj-1", log, 10_000) == b""

        results_dir = work / "inj-3" / "results"
        (results_dir / "run-1").mkdir(parents=True)
        (results_dir / "run-1" / "simulation.log").write_bytes(os.urandom(200_000))
        (results_dir / "summary.txt").write_text("ok\n")
        packing_started = time.time() - 1
        fetched = fleet.fetch_tree("inj-3", str(results_dir), tmp_path / "fetched")
        assert (fetched / "run-1" / "simulation.log").read_bytes() == (
            results_dir / "run-1" / "simulation.log"
        ).read_bytes()
        assert (fetched / "summary.txt").read_text() == "ok\n"
        leftovers = [p for p in Path("/tmp").glob("spike-fetch.*") if p.stat().st_mtime >= packing_started]
        assert leftovers == []  # the packed copy was removed from the injector
        with pytest.raises(TransportError, match="does not exist") as missing:
            fleet.fetch_tree("inj-3", str(work / "no-such-dir"), tmp_path / "fetched2")
        assert "inj-3" in str(missing.value)


def test_a_failing_command_names_its_host_and_stderr(
    hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    with SshFleet(ssh_hosts(hosts, client_key[0])) as fleet:
        fleet.connect()
        with pytest.raises(TransportError) as failed:
            fleet.run({"inj-1": "true", "inj-2": "echo disk full >&2; exit 3"})
        assert set(failed.value.failures) == {"inj-2"}
        assert "inj-2 (root@127.0.0.3:" in str(failed.value)
        assert "status 3" in str(failed.value) and "disk full" in str(failed.value)
        assert failed.value.results["inj-1"].exit_code == 0  # type: ignore[attr-defined]
        unchecked = fleet.run("exit 5", check=False)
        assert {r.exit_code for r in unchecked.values()} == {5}


def test_ensure_bundle_pushes_only_what_a_host_lacks(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    content = tmp_path / "bundle"
    (content / "lib").mkdir(parents=True)
    (content / "lib" / "gatling.jar").write_bytes(os.urandom(300_000))
    (content / "classpath.txt").write_text("lib/gatling.jar\n")
    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        tar.add(content, arcname=".")
    jar = (content / "lib" / "gatling.jar").read_bytes()

    with SshFleet(ssh_hosts(hosts, client_key[0])) as fleet:
        fleet.connect()
        # A relative root: each host's own home (see sshd.py), as on separate machines.
        assert fleet.ensure_bundle(bundle, "abc123", "cache") == dict.fromkeys(fleet.names, True)
        for host in hosts:
            cached = host.home / "cache" / "abc123"
            assert (cached / ".complete").exists()
            assert (cached / "lib" / "gatling.jar").read_bytes() == jar
        mtime = (hosts[0].home / "cache/abc123/lib/gatling.jar").stat().st_mtime_ns

        assert fleet.ensure_bundle(bundle, "abc123", "cache") == dict.fromkeys(fleet.names, False)
        assert (hosts[0].home / "cache/abc123/lib/gatling.jar").stat().st_mtime_ns == mtime  # untouched
        assert sorted(p.name for p in (hosts[0].home / "cache").iterdir()) == ["abc123"]  # no temporaries

        assert fleet.ensure_bundle(bundle, "def456", "cache", hosts=["inj-2"]) == {"inj-2": True}
        assert (hosts[1].home / "cache/def456/classpath.txt").read_text() == "lib/gatling.jar\n"
        assert not (hosts[0].home / "cache/def456").exists()

        # A directory without .complete (an interrupted extraction) is never trusted.
        half = hosts[0].home / "cache" / "half"
        half.mkdir()
        (half / "junk").write_text("x")
        assert fleet.ensure_bundle(bundle, "half", "cache", hosts=["inj-1"]) == {"inj-1": True}
        assert not (half / "junk").exists() and (half / ".complete").exists()

        with pytest.raises(BadInputError, match="not a plain file name"):
            fleet.ensure_bundle(bundle, "../escape", "cache")


def test_an_impostor_is_refused_and_nothing_from_home_is_trusted(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    other = SshdHost(tmp_path / "other", "127.0.0.9", authorized_key=client_key[1])
    other._prepare()  # only its key: a different machine's host key
    impostor_pin = other.host_fingerprint
    assert impostor_pin != hosts[1].host_fingerprint
    # If anything read these, inj-1 would be rejected (wrong key on record) or sent elsewhere.
    known_hosts = "".join(f"[{h.address}]:{h.port} {other.host_public_key}\n" for h in hosts)
    (home / ".ssh" / "known_hosts").write_text(known_hosts)
    (home / ".ssh" / "config").write_text(
        "Host *\n  Port 1\n  HostName 127.0.0.99\n  IdentityFile /nonexistent\n"
    )

    with SshFleet(ssh_hosts(hosts, client_key[0], inj_2=(impostor_pin,))) as fleet:
        with pytest.raises(TransportError) as refused:
            fleet.connect()
        assert set(refused.value.failures) == {"inj-2"}
        message = str(refused.value)
        assert "inj-2 (root@127.0.0.3:" in message
        assert "impostor" in message and "mismatch" in message
        assert hosts[1].host_fingerprint in message and impostor_pin in message
        # The other hosts are fine, and Fabric's client trusts only the pinned policy.
        assert fleet.run({"inj-1": "echo up", "inj-3": "echo up"})["inj-3"].stdout == "up\n"
        client = fleet._links["inj-1"].conn.client  # type: ignore[union-attr]
        assert isinstance(client._policy, PinnedHostKeyPolicy)
        assert len(client.get_host_keys()) == 0 and len(client._system_host_keys) == 0

    assert (home / ".ssh" / "known_hosts").read_text() == known_hosts
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["config", "known_hosts"]


def test_no_pinned_fingerprint_means_no_connection(
    hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    with SshFleet(ssh_hosts(hosts[:1], client_key[0], inj_1=())) as fleet:
        with pytest.raises(TransportError, match="no host key fingerprint is pinned") as refused:
            fleet.connect()
        assert "inj-1 (root@127.0.0.2:" in str(refused.value)
    assert "Accepted publickey" not in hosts[0].log_file.read_text()


def test_a_host_that_is_down_is_named_and_a_booting_one_is_waited_for(
    hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    hosts[1].stop()
    with SshFleet(ssh_hosts(hosts, client_key[0]), connect_timeout_s=2) as fleet:
        with pytest.raises(TransportError) as down:
            fleet.connect()
        assert set(down.value.failures) == {"inj-2"}
        assert "inj-2 (root@127.0.0.3:" in str(down.value) and "refused" in str(down.value)
        assert "inj-1" not in str(down.value) and "inj-3" not in str(down.value)

    booted = threading.Timer(1.5, hosts[1].start)  # the instance finishes booting during the wait
    booted.start()
    try:
        with SshFleet(ssh_hosts(hosts, client_key[0]), boot_wait_s=15) as fleet:
            started = time.monotonic()
            fleet.connect()
            assert time.monotonic() - started >= 1.4
            assert fleet.run({"inj-2": "echo booted"})["inj-2"].stdout == "booted\n"
    finally:
        booted.join()


def test_a_detached_command_survives_a_dropped_connection(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    workdir = str(tmp_path / "run")
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        fleet.start_detached(
            "inj-1", "echo started; sleep 3; echo done", workdir=workdir, log_name="gatling.log"
        )
        assert fleet.exit_status("inj-1", workdir, "gatling.log") is None
        assert hosts[0].drop_connections() >= 1

        status = wait_for(
            lambda: fleet.exit_status("inj-1", workdir, "gatling.log") is not None,
            15,
            "the detached command ends",
        )
        assert status and fleet.exit_status("inj-1", workdir, "gatling.log") == 0
        assert fleet.opened["inj-1"] == 2  # reconnected once, by itself
        assert fleet.read_from("inj-1", f"{workdir}/gatling.log", 0) == b"started\ndone\n"


def test_signal_stops_the_whole_process_group(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    workdir = str(tmp_path / "run")
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        fleet.start_detached("inj-1", "sleep 60 & sleep 61; wait", workdir=workdir, log_name="g.log")
        pgid = int(fleet.read_from("inj-1", f"{workdir}/g.log.pid", 0))
        assert wait_for(lambda: len(group(pgid)) >= 3, 5, "the group runs")  # wrapper, sh, two sleeps
        fleet.signal("inj-1", workdir, "g.log", "TERM")
        started = time.monotonic()
        wait_for(lambda: fleet.exit_status("inj-1", workdir, "g.log") is not None, 5, "the command ends")
        assert time.monotonic() - started < 3
        assert fleet.exit_status("inj-1", workdir, "g.log") == 143
        assert wait_for(lambda: not group(pgid), 5, "every process of the group is gone")
        fleet.signal("inj-1", workdir, "g.log", "TERM")  # gone already: no error


def test_detached_commands_on_every_host_and_one_killed_outright(
    hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    with SshFleet(ssh_hosts(hosts, client_key[0])) as fleet:
        fleet.connect()
        commands = {name: f"echo {name}; sleep 0.3" for name in fleet.names}
        commands["inj-3"] = "sleep 60"
        fleet.start_detached_all(commands, workdir="run", log_name="g.log")  # relative: each host's home
        assert fleet.exit_statuses("run", "g.log") == dict.fromkeys(fleet.names, None)
        fleet.signal("inj-3", "run", "g.log", "KILL")  # the wrapper dies too: no status can be written
        wait_for(lambda: None not in fleet.exit_statuses("run", "g.log").values(), 5, "every command is over")
        assert fleet.exit_statuses("run", "g.log") == {"inj-1": 0, "inj-2": 0, "inj-3": KILLED_WITHOUT_STATUS}
        assert (hosts[1].home / "run" / "g.log").read_text() == "inj-2\n"
        with pytest.raises(TransportError, match=r"no detached process 'other\.log'") as never:
            fleet.exit_status("inj-1", "run", "other.log")
        assert "inj-1 (root@127.0.0.2:" in str(never.value)


def test_a_malformed_pin_is_refused_before_anything_connects(client_key: tuple[Path, str]) -> None:
    host = SshHost(
        name="inj-1", address="127.0.0.2", key_path=client_key[0], host_key_fingerprints=("ab:cd",)
    )
    with pytest.raises(BadInputError, match="not a SHA256 host key fingerprint") as refused:
        SshFleet([host])
    assert refused.value.where == "inj-1 (root@127.0.0.2:22)"


def group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def test_clock_offsets_on_loopback_are_near_zero(hosts: list[SshdHost], client_key: tuple[Path, str]) -> None:
    with SshFleet(ssh_hosts(hosts, client_key[0])) as fleet:
        fleet.connect()
        samples = fleet.clock_offsets(samples=8)
    assert set(samples) == {"inj-1", "inj-2", "inj-3"}
    for sample in samples.values():
        assert abs(sample.offset_ms) < 20
        assert 0 < sample.rtt_ms < 100


def test_a_command_that_hangs_is_stopped_at_its_timeout(
    hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        started = time.monotonic()
        with pytest.raises(TransportError, match="did not finish within") as hung:
            fleet.run("sleep 29.5", timeout_s=2)
        assert 1.9 < time.monotonic() - started < 4
        assert "inj-1 (root@127.0.0.2:" in str(hung.value)
        assert fleet.run("echo still usable")["inj-1"].stdout == "still usable\n"
        # The host's own deadline (`timeout`, a second after ours) ends it: nothing lingers.
        wait_for(lambda: not sleepers("29.5"), 6, "the timed-out command is gone on the host")


def sleepers(argument: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "sleep" and (proc.info["cmdline"] or [])[1:] == [argument]:
            found.append(proc)
    return found


def test_fingerprints_from_the_helper_match_spikes_own(hosts: list[SshdHost]) -> None:
    # sshd.py asks ssh-keygen; spike computes its own: they must agree for pinning to work.
    for host in hosts:
        assert fingerprint_of_public_key_line(host.host_public_key) == host.host_fingerprint


def test_a_connection_that_drops_mid_command_is_reopened_once(
    hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    host = hosts[0]
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        dropper = threading.Timer(0.5, host.drop_connections)
        dropper.start()
        assert fleet.run("sleep 1; echo again")["inj-1"].stdout == "again\n"  # run a second time
        dropper.join()
        assert fleet.opened["inj-1"] == 2

        dropper = threading.Timer(0.5, host.drop_connections)
        dropper.start()
        with pytest.raises(TransportError, match="may or may not have completed") as lost:
            fleet.run("sleep 1; echo once", idempotent=False)
        dropper.join()
        assert "inj-1 (root@127.0.0.2:" in str(lost.value)
        assert fleet.run("echo fine")["inj-1"].stdout == "fine\n"


# A process that drains on TERM (as the agent does): it is still working well after the TERM, and
# it is the child of a shell that the TERM ends at once.
DRAINER = (
    "python3 -c 'import signal, sys, time\n"
    "def drain(*_):\n"
    "    time.sleep(1.5)\n"
    '    open("drained", "w").write("yes")\n'
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, drain)\n"
    'open("ready", "w").write("yes")\n'
    "time.sleep(60)'; echo after"
)


def test_an_exit_status_appears_only_once_every_process_of_the_group_has_ended(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    workdir = tmp_path / "run"
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        fleet.start_detached("inj-1", f"cd {workdir} && {DRAINER}", workdir=str(workdir), log_name="a.log")
        wait_for(lambda: (workdir / "ready").exists(), 10, "the drainer runs")
        fleet.signal("inj-1", str(workdir), "a.log", "TERM")
        signalled = time.monotonic()
        status = None
        while status is None:
            status = fleet.exit_status("inj-1", str(workdir), "a.log")
            drained = (workdir / "drained").exists()
            if status is None:
                assert time.monotonic() - signalled < 10, "the status never appeared"
                time.sleep(0.05)
        # the shell between wrapper and drainer died with the TERM; its status is recorded, but
        # only after the drainer had finished its work
        assert drained, "the exit status appeared while the drainer was still draining"
        assert time.monotonic() - signalled >= 1.4
        assert status == 143


def deadman_processes(workdir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if ".deadman.py" in " ".join(proc.info["cmdline"] or []) and proc.info["cwd"] == str(workdir):
            found.append(proc)
    return found


def test_the_watchdog_stops_every_group_when_the_lease_is_not_renewed(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    workdir = tmp_path / "run"
    deadman = Deadman(expires_s=2, grace_s=1.5)
    stubborn = (
        "python3 -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'"
    )
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        fleet.start_detached("inj-1", "sleep 61", workdir=str(workdir), log_name="a.log", deadman=deadman)
        fleet.start_detached("inj-1", stubborn, workdir=str(workdir), log_name="b.log", deadman=deadman)
        groups = [int((workdir / f"{n}.log.pid").read_text()) for n in "ab"]
        assert len(deadman_processes(workdir)) == 1  # one watchdog per directory
        assert fleet.remains("inj-1", str(workdir)).groups == tuple(groups)
        started = time.monotonic()
        try:
            wait_for(lambda: not any(group(g) for g in groups), 15, "the watchdog stops both groups")
        except AssertionError:
            log = workdir / "deadman.log"
            alive = [(p.pid, p.status(), p.cmdline()) for g in groups for p in group(g)]
            raise AssertionError(
                f"still alive: {alive}; watchdogs: {[p.pid for p in deadman_processes(workdir)]}; "
                f"deadman.log: {log.read_text() if log.exists() else '(none)'}"
            ) from None
        elapsed = time.monotonic() - started
        assert 1.5 < elapsed < 2 + 1.5 + 3, elapsed
        log = (workdir / "deadman.log").read_text()
        assert "lease expired: deadman.lease not renewed for" in log and "(limit 2 s)" in log
        assert f"SIGKILL to process group(s) {groups[1]}" in log  # the one that ignored SIGTERM
        assert fleet.exit_statuses(str(workdir), "a.log") == {"inj-1": 143}
        assert fleet.exit_statuses(str(workdir), "b.log") == {"inj-1": KILLED_WITHOUT_STATUS}
        wait_for(lambda: not deadman_processes(workdir), 5, "the watchdog leaves")
        assert fleet.remains("inj-1", str(workdir), ["a.log", "b.log"]).gone


def test_a_renewed_lease_keeps_the_processes_and_the_watchdog_leaves_with_them(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    workdir = tmp_path / "run"
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        fleet.start_detached(
            "inj-1", "sleep 4", workdir=str(workdir), log_name="a.log", deadman=Deadman(expires_s=1.5)
        )
        renewals = 0
        while fleet.exit_status("inj-1", str(workdir), "a.log") is None:
            renewals += 1
            fleet.renew_lease("inj-1", str(workdir), f"renewal {renewals}")
            if renewals == 3:
                hosts[0].drop_connections()  # a renewal after a drop reconnects
            time.sleep(0.4)
        assert fleet.exit_status("inj-1", str(workdir), "a.log") == 0  # ran its full 4 s
        assert fleet.opened["inj-1"] >= 2
        wait_for(lambda: not deadman_processes(workdir), 5, "the watchdog leaves with the process")
        log = (workdir / "deadman.log").read_text()
        assert "lease expired" not in log and "every process of the run is gone" in log
        assert fleet.remains("inj-1", str(workdir), ["a.log"]).gone


def test_nothing_starts_under_a_deadman_whose_python_is_missing(
    tmp_path: Path, hosts: list[SshdHost], client_key: tuple[Path, str]
) -> None:
    workdir = tmp_path / "run"
    with SshFleet(ssh_hosts(hosts[:1], client_key[0])) as fleet:
        fleet.connect()
        with pytest.raises(TransportError, match="/no/python3 is missing: the dead-man watchdog") as refused:
            fleet.start_detached(
                "inj-1",
                "sleep 60",
                workdir=str(workdir),
                log_name="a.log",
                deadman=Deadman(python="/no/python3"),
            )
        assert "inj-1 (root@127.0.0.2:" in str(refused.value)
        assert not (workdir / "a.log.pid").exists() and not sleepers("60")
