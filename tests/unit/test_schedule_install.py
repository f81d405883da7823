import getpass
import json
import shlex
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from loadorch.cli import schedule as schedule_cli
from loadorch.errors import BadInputError
from loadorch.schedule import install
from loadorch.schedule.install import Schedule

ARGS = ("run", "--profile", "weekly-resilience", "--regions", "eu-west-2")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPIKE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def _schedule(root: Path, **overrides: object) -> Schedule:
    values: dict[str, object] = {
        "backend": "systemd",
        "name": "weekly",
        "cron": "0 3 * * MON",
        "spike_args": ARGS,
        "root": str(root),
        "workdir": "/srv/spike work",
        "python": "/opt/venv/bin/python",
    }
    values.update(overrides)
    return Schedule(**values)  # type: ignore[arg-type]


def test_systemd_install_under_a_temp_root_writes_units_and_runs_nothing(home: Path, root: Path) -> None:
    plan = install.add(_schedule(root))
    assert plan.commands == []  # only ROOT / touches the live system
    unit_dir = root / "etc/systemd/system"
    service = (unit_dir / "spike-weekly.service").read_text()
    timer = (unit_dir / "spike-weekly.timer").read_text()
    assert "ExecStart=/opt/venv/bin/python -m loadorch schedule run-now weekly\n" in service
    assert 'WorkingDirectory="/srv/spike work"' in service
    assert f"Environment=SPIKE_HOME={home.resolve()}" in service
    assert "Type=oneshot" in service
    assert "OnCalendar=Mon *-*-* 03:00:00 UTC" in timer
    assert "Persistent=true" in timer
    assert "RandomizedDelaySec=0" in timer
    assert "Unit=spike-weekly.service" in timer
    assert "WantedBy=timers.target" in timer
    stored = json.loads((home / "schedules/weekly.json").read_text())
    assert stored["spike_args"] == list(ARGS)
    assert stored["backend"] == "systemd"


def test_either_day_schedule_gets_two_on_calendar_lines(home: Path, root: Path) -> None:
    install.add(_schedule(root, cron="0 0 13 * FRI", timezone="Europe/London"))
    timer = (root / "etc/systemd/system/spike-weekly.timer").read_text()
    assert "OnCalendar=*-*-13 00:00:00 Europe/London\nOnCalendar=Fri *-*-* 00:00:00 Europe/London\n" in timer


def test_live_root_plan_enables_the_timer(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.os, "geteuid", lambda: 0)
    plan = install.install_plan(_schedule(Path("/")))
    assert [c.argv for c in plan.commands] == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "--now", "spike-weekly.timer"),
    ]
    assert Path("/etc/systemd/system/spike-weekly.timer") in plan.files


def test_live_root_as_a_user_uses_user_units_and_the_user_crontab(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    plan = install.install_plan(_schedule(Path("/")))
    assert tmp_path / "config/systemd/user/spike-weekly.timer" in plan.files
    assert plan.commands[1].argv == ("systemctl", "--user", "enable", "--now", "spike-weekly.timer")
    cron_plan = install.install_plan(_schedule(Path("/"), backend="cron"))
    assert cron_plan.user_crontab and not cron_plan.files and not cron_plan.commands


def test_cron_install_under_a_temp_root_writes_a_cron_d_file(home: Path, root: Path) -> None:
    plan = install.add(_schedule(root, backend="cron", cron="@daily"))
    path = root / "etc/cron.d/spike-weekly"
    assert list(plan.files) == [path]
    text = path.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("0 0 * * *"))
    fields = line.split(" ", 6)
    assert fields[5] == getpass.getuser()  # cron.d lines carry a user field
    assert shlex.split(fields[6])[:2] == ["cd", "/srv/spike work"]
    assert "/opt/venv/bin/python -m loadorch schedule run-now weekly" in line
    assert f"SPIKE_HOME={home.resolve()}" in line
    assert "CRON_TZ=UTC" in text


def test_user_crontab_block_is_added_replaced_and_removed(home: Path) -> None:
    others = "MAILTO=ops\n15 1 * * * /usr/bin/backup\n"
    schedule = _schedule(Path("/"), backend="cron")
    once = install.crontab_with(others, schedule, home)
    twice = install.crontab_with(once, schedule, home)
    assert once == twice
    assert once.startswith(others)
    assert "# BEGIN spike schedule weekly\n0 3 * * 1 cd " in once
    assert install.crontab_without(twice, "weekly") == others


def test_a_percent_sign_is_escaped_for_cron_and_systemd(home: Path) -> None:
    schedule = _schedule(Path("/x"), workdir="/srv/100%")
    assert "/srv/100\\%" in install.cron_line(schedule, home, user=None)
    assert (
        'WorkingDirectory="/srv/100%%"' not in install.systemd_units(schedule, home)["spike-weekly.service"]
    )
    assert "WorkingDirectory=/srv/100%%" in install.systemd_units(schedule, home)["spike-weekly.service"]


def test_list_and_remove(home: Path, root: Path) -> None:
    install.add(_schedule(root))
    install.add(_schedule(root, name="nightly", backend="cron", cron="@daily"))
    assert [s.name for s in install.list_schedules()] == ["nightly", "weekly"]
    removed = install.remove("nightly")
    assert removed.backend == "cron"
    assert not (root / "etc/cron.d/spike-nightly").exists()
    assert [s.name for s in install.list_schedules()] == ["weekly"]
    install.remove("weekly")
    assert not list((root / "etc/systemd/system").iterdir())
    assert install.list_schedules() == []


def test_duplicate_and_unknown_names_are_clear_errors(home: Path, root: Path) -> None:
    install.add(_schedule(root))
    with pytest.raises(BadInputError, match="schedule 'weekly' exists already") as info:
        install.add(_schedule(root, backend="cron"))
    assert "spike schedule remove weekly" in (info.value.fix or "")
    with pytest.raises(BadInputError, match=r"no schedule named 'nope' \(known: weekly\)"):
        install.remove("nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Weekly"}, "schedule name 'Weekly' is not valid"),
        ({"name": "-x"}, "is not valid"),
        ({"cron": "0 3 * * FUNDAY"}, "day-of-week value 'FUNDAY'"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"spike_args": ()}, "has no spike arguments"),
        ({"spike_args": ("schedule", "run-now", "x")}, "cannot run `spike schedule"),
        ({"notify_url": "ftp://x/y"}, "is not an http(s) URL"),
        ({"backend": "launchd"}, "backend 'launchd' is not valid"),
    ],
)
def test_invalid_schedules_are_refused_before_anything_is_written(
    home: Path, root: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        install.add(_schedule(root, **overrides))
    assert not root.exists()
    assert install.list_schedules() == []


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert install.choose_backend("cron") == "cron"
    with pytest.raises(BadInputError, match="valid: systemd or cron"):
        install.choose_backend("launchd")
    monkeypatch.setattr(install, "systemd_available", lambda: False)
    assert install.choose_backend(None) == "cron"
    monkeypatch.setattr(install, "systemd_available", lambda: True)
    assert install.choose_backend(None) == "systemd"


def test_webhook_urls_are_redacted() -> None:
    assert (
        install.redact_url("https://user:tok@hooks.example:8443/a/secret?x=1")
        == "https://hooks.example:8443/..."
    )


def test_github_actions_export(home: Path, root: Path) -> None:
    install.add(_schedule(root))
    workflow = yaml.safe_load(install.export("weekly", "github-actions"))
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert triggers["schedule"] == [{"cron": "0 3 * * 1"}]
    steps = workflow["jobs"]["spike"]["steps"]
    assert steps[1]["run"] == "make deps"
    script = steps[2]["run"]
    assert "schedule run-now weekly --results-dir spike-results -- " + shlex.join(ARGS) in script
    assert 'exit "$code"' in script
    upload = steps[3]
    assert upload["if"] == "always()"
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "spike-results/"


def test_gitlab_export(home: Path, root: Path) -> None:
    install.add(_schedule(root, cron="@daily"))
    text = install.export("weekly", "gitlab-ci")
    assert 'cron "0 0 * * *"' in text
    job = yaml.safe_load(text)["spike-weekly"]
    assert job["before_script"] == ["make deps"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "spike-results/**/junit.xml"
    assert job["rules"][0]["if"] == '$CI_PIPELINE_SOURCE == "schedule"'
    with pytest.raises(BadInputError, match="valid: github-actions, gitlab-ci"):
        install.export("weekly", "jenkins")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(schedule_cli.app, name="schedule")

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_cli_add_list_export_remove(home: Path, root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    app = _cli()
    add = [
        "schedule", "add", "weekly", "--cron", "0 3 * * MON", "--backend", "cron",
        "--root", str(root), "--workdir", str(tmp_path), "--notify", "https://hooks.example/t0ken",
        "--", *ARGS,
    ]  # fmt: skip
    result = runner.invoke(app, add)
    assert result.exit_code == 0, result.output
    assert "added schedule weekly (cron)" in result.output
    assert (root / "etc/cron.d/spike-weekly").exists()
    stored = install.load("weekly")
    assert stored.python == str(Path(sys.executable).absolute())
    assert stored.spike_args == ARGS

    again = runner.invoke(app, add)
    assert again.exit_code == 2
    assert "exists already" in again.output

    listed = runner.invoke(app, ["schedule", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert rows[0]["name"] == "weekly" and rows[0]["next_run"]
    assert "t0ken" not in listed.output

    exported = runner.invoke(app, ["schedule", "export", "weekly", "--format", "gitlab-ci"])
    assert exported.exit_code == 0 and "spike-weekly:" in exported.output
    bad = runner.invoke(app, ["schedule", "export", "weekly", "--format", "jenkins"])
    assert bad.exit_code == 2

    assert runner.invoke(app, ["schedule", "remove", "weekly"]).exit_code == 0
    unknown = runner.invoke(app, ["schedule", "remove", "weekly"])
    assert unknown.exit_code == 2
    assert "no schedule named 'weekly'" in unknown.output
