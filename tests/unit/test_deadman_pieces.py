"""The dead-man switch's pure pieces: lease timings, the scripts as text, teardown's wording."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from loadorch.errors import BadInputError
from loadorch.providers.lease import LEASE_EXPIRES_S, LEASE_RENEW_S, lease_timings
from loadorch.providers.remote import teardown_summary
from loadorch.transport.remote_scripts import (
    WATCHDOG_PY,
    Deadman,
    launch_script,
    pack_script,
    parse_remains,
    remains_script,
    signal_script,
    status_script,
    unpack_script,
)


def test_the_default_lease_is_renewed_every_5_s_and_expires_after_30_s() -> None:
    assert (LEASE_RENEW_S, LEASE_EXPIRES_S) == (5.0, 30.0)
    assert lease_timings(environ={}) == (5.0, 30.0)


def test_the_environment_shortens_the_lease_and_arguments_win() -> None:
    assert lease_timings(environ={"SPIKE_LEASE_EXPIRES_S": "6"}) == (2.0, 6.0)  # renewed 3x per expiry
    assert lease_timings(environ={"SPIKE_LEASE_EXPIRES_S": "60", "SPIKE_LEASE_RENEW_S": "10"}) == (10.0, 60.0)
    assert lease_timings(1, 4, environ={"SPIKE_LEASE_EXPIRES_S": "60"}) == (1.0, 4.0)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SPIKE_LEASE_EXPIRES_S": "soon"}, "SPIKE_LEASE_EXPIRES_S='soon' is not a positive number"),
        ({"SPIKE_LEASE_RENEW_S": "-1"}, "SPIKE_LEASE_RENEW_S='-1' is not a positive number"),
        ({"SPIKE_LEASE_RENEW_S": "nan"}, "is not a positive number"),
        (
            {"SPIKE_LEASE_EXPIRES_S": "8", "SPIKE_LEASE_RENEW_S": "5"},
            "expire after 8 s but be renewed only every 5 s",
        ),
    ],
)
def test_a_bad_lease_setting_is_refused_with_the_fix(environ: dict[str, str], message: str) -> None:
    with pytest.raises(BadInputError, match=message) as refused:
        lease_timings(environ=environ)
    assert refused.value.fix is not None and "30" in refused.value.fix and "5" in refused.value.fix


def test_teardown_is_clean_only_when_every_host_was_checked_and_empty() -> None:
    assert teardown_summary([], {}, {}, lease_expires_s=30, grace_s=10) == ("nothing was started", True)
    summary, clean = teardown_summary(["a", "b"], {}, {}, lease_expires_s=30, grace_s=10)
    assert clean
    assert summary == "no process of the run is left on 2 of 2 SSH injector(s) (checked on each host)"


def test_an_unreachable_host_is_unverified_and_the_lease_is_named_as_the_backstop() -> None:
    summary, clean = teardown_summary(
        ["a", "b", "c"],
        {"c": "process group(s) 4242"},
        {"b": "connection refused: nothing listens on 127.0.0.3:2222"},
        lease_expires_s=30,
        grace_s=10,
    )
    assert not clean
    assert summary.startswith("no process of the run is left on 1 of 3 SSH injector(s)")
    assert (
        "unverified: b: connection refused: nothing listens on 127.0.0.3:2222; the lease stops them: "
        "its watchdog ends the run's processes 30 s after the last renewal (SIGKILL 10 s later)"
    ) in summary
    assert "still running on c: process group(s) 4242; the lease stops them" in summary
    everything_lost, clean = teardown_summary(["a"], {}, {"a": "timed out"}, lease_expires_s=4, grace_s=2)
    assert not clean and everything_lost.startswith("unverified: a: timed out;")


def test_the_watchdog_ships_only_with_a_deadman_and_carries_its_limits() -> None:
    plain = launch_script("sleep 1", "/w", "g.log", "tok")
    assert "deadman" not in plain
    guarded = launch_script(
        "sleep 1", "/w", "g.log", "tok", Deadman(python="/opt/py3", expires_s=30, grace_s=10)
    )
    assert "echo $pgid >> deadman.groups" in guarded
    assert "echo launch tok > deadman.lease" in guarded
    assert "setsid nohup /opt/py3 .deadman.py 30 10 1 >> deadman.log" in guarded
    assert WATCHDOG_PY in guarded
    compile(WATCHDOG_PY, ".deadman.py", "exec")
    assert Deadman(expires_s=4).check_s == 0.4 and Deadman().check_s == 1.0


SHELLS = [path for path in (shutil.which("dash"), shutil.which("bash")) if path]


@pytest.mark.parametrize("shell", SHELLS)
def test_every_script_is_valid_posix_shell(shell: str) -> None:
    scripts = [
        launch_script("echo 'quoted' \"too\"", "/w d", "g.log", "tok", Deadman()),
        launch_script("sleep 1", "/w", "g.log", "tok"),
        status_script("/w d", "g.log"),
        signal_script("/w", "g.log", "TERM"),
        remains_script("/w", ("g.log", "agent.log"), settle_s=3),
        unpack_script("/r", "abc", ".abc.tar", 10),
        pack_script("/r"),
    ]
    for script in scripts:
        argv = [shell, "--posix", "-n"] if shell.endswith("bash") else [shell, "-n"]
        checked = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=10)
        assert checked.returncode == 0, (checked.stderr, script)


def test_the_answer_about_what_is_left_is_parsed_strictly() -> None:
    assert parse_remains("groups\nwatchdog -\n") == ((), None)
    assert parse_remains("groups 12 34\nwatchdog 56\n") == ((12, 34), 56)
    assert parse_remains("groups x\nwatchdog -\n") is None
    assert parse_remains("something else") is None
