"""Scheduled runs: stored definitions, systemd timers or cron entries, and CI exports.

A **schedule** is a name, a cron expression (evaluated in a time zone, UTC by
default) and the spike arguments to run, e.g. `run --profile weekly-resilience`.
Its definition is JSON under `state_dir()/schedules/<name>.json`.

What the scheduler starts is never the spike arguments themselves but
`<python> -m loadorch schedule run-now <name>`, so that the lock, the missed-run
record, the JUnit/verdict files and the webhook apply to every scheduled run.

Everything installs under a ROOT directory (default `/`); only when ROOT is `/`
does spike touch the live system (`systemctl`, `crontab`). Under any other root
it writes files and nothing else, which is how packaging and the tests use it.

Backends and where they write:

- `systemd`: `<root>/etc/systemd/system/spike-<name>.service` and `.timer`
  (`Persistent=true`: a run missed while the machine was off fires at boot).
  With ROOT `/` and a non-root user the units are user units under
  `$XDG_CONFIG_HOME/systemd/user/` driven by `systemctl --user`.
- `cron`: with ROOT other than `/`, or as root, a file `<root>/etc/cron.d/spike-<name>`
  (cron.d lines carry a user field). With ROOT `/` and a non-root user, a block
  in the user's crontab between `# BEGIN spike schedule <name>` and
  `# END spike schedule <name>`, edited through `crontab -l` / `crontab -`.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from loadorch.errors import BadInputError, InfrastructureError
from loadorch.paths import state_dir
from loadorch.process import Command
from loadorch.schedule import cron

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
BACKENDS = ("systemd", "cron")
EXPORT_FORMATS = ("github-actions", "gitlab-ci")
SYSTEMCTL_TIMEOUT_S = 30.0
Backend = Literal["systemd", "cron"]


def schedules_dir() -> Path:
    return state_dir() / "schedules"


@dataclass(frozen=True)
class Schedule:
    """A scheduled spike run: what to run, when, and where its results go."""

    name: str
    cron: str
    spike_args: tuple[str, ...]
    timezone: str = "UTC"
    notify_url: str | None = None
    results_dir: str | None = None
    workdir: str = field(default_factory=os.getcwd)
    python: str = field(default_factory=lambda: os.path.abspath(sys.executable))
    backend: Backend = "cron"
    root: str = "/"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def unit(self) -> str:
        return f"spike-{self.name}"

    def results_path(self) -> Path:
        """Where run dirs, JUnit and verdict files of this schedule go."""
        if self.results_dir:
            return Path(self.results_dir)
        return schedules_dir() / self.name / "results"

    def run_now_argv(self) -> tuple[str, ...]:
        return (self.python, "-m", "loadorch", "schedule", "run-now", self.name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spike_args"] = list(self.spike_args)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["spike_args"] = tuple(known.get("spike_args", ()))
        return cls(**known)


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise BadInputError(
            f"schedule name {name!r} is not valid",
            fix="use 1-63 lower-case letters, digits and '-', starting with a letter or digit, e.g. weekly-eu",
        )
    return name


def validate(schedule: Schedule) -> Schedule:
    """Check a schedule before anything is written; errors name the field and the valid values."""
    validate_name(schedule.name)
    cron.parse(schedule.cron)
    cron.zone(schedule.timezone)
    if schedule.backend not in BACKENDS:
        raise BadInputError(
            f"backend {schedule.backend!r} is not valid", fix=f"valid: {' or '.join(BACKENDS)}"
        )
    if not schedule.spike_args:
        raise BadInputError(
            f"schedule {schedule.name!r} has no spike arguments",
            fix="put them after `--`, e.g. `spike schedule add weekly --cron '0 3 * * MON' -- run --profile weekly-resilience`",
        )
    if schedule.spike_args[0] == "schedule":
        raise BadInputError(
            "a schedule cannot run `spike schedule ...`", fix="schedule a `run` (or another command)"
        )
    if schedule.notify_url and not re.match(r"^https?://[^/\s]+", schedule.notify_url):
        raise BadInputError(
            f"notify URL {_redact(schedule.notify_url)!r} is not an http(s) URL",
            fix="give a URL such as https://hooks.example/spike",
        )
    if not Path(schedule.workdir).is_absolute() or not Path(schedule.python).is_absolute():
        raise BadInputError("the working directory and the interpreter must be absolute paths")
    return schedule


def _redact(url: str) -> str:
    """scheme://host of a URL: webhook paths and queries often carry tokens."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@\s]*@?[^/?#\s]*)", url)
    host = match.group(1) if match else "<url>"
    return re.sub(r"//[^@/]*@", "//", host) + "/..."


def redact_url(url: str | None) -> str | None:
    return None if url is None else _redact(url)


# -- backend choice ------------------------------------------------------------------------------


def systemd_available() -> bool:
    """systemd is PID 1 and `systemctl` answers."""
    try:
        if Path("/proc/1/comm").read_text().strip() != "systemd":
            return False
    except OSError:
        return False
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    argv = [systemctl, "list-timers", "--no-pager"]
    if os.geteuid() != 0:
        argv.insert(1, "--user")
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_backend(requested: str | None = None) -> Backend:
    """The requested backend, else systemd when it runs this machine, else cron."""
    if requested is not None:
        if requested not in BACKENDS:
            raise BadInputError(f"backend {requested!r} is not valid", fix=f"valid: {' or '.join(BACKENDS)}")
        return "systemd" if requested == "systemd" else "cron"
    return "systemd" if systemd_available() else "cron"


def _live(root: str | Path) -> bool:
    return Path(root).resolve() == Path("/")


def _user_scope(root: str | Path) -> bool:
    """Live installs by a non-root user go to the user's units or crontab."""
    return _live(root) and os.geteuid() != 0


# -- systemd -------------------------------------------------------------------------------------


def _systemd_quote(word: str) -> str:
    # `%` starts a specifier in unit files; quotes keep spaces inside one argument
    word = word.replace("%", "%%")
    if re.search(r"[\s\"'\\;]", word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def systemd_unit_dir(root: str | Path) -> Path:
    if _user_scope(root):
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path(root) / "etc" / "systemd" / "system"


def systemd_units(schedule: Schedule, spike_home: Path) -> dict[str, str]:
    """The text of `spike-<name>.service` and `spike-<name>.timer`."""
    exec_start = " ".join(_systemd_quote(word) for word in schedule.run_now_argv())
    service = "\n".join(
        [
            "# written by `spike schedule add`; remove with `spike schedule remove " + schedule.name + "`",
            "[Unit]",
            f"Description=spike scheduled run {schedule.name}: spike {shlex.join(schedule.spike_args)}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={_systemd_quote(schedule.workdir)}",
            f"Environment={_systemd_quote('SPIKE_HOME=' + str(spike_home))}",
            f"ExecStart={exec_start}",
            # spike's own exit codes (1 SLO failed, 3 infrastructure) mark the unit failed; that is the point
            "",
        ]
    )
    calendars = [f"OnCalendar={spec}" for spec in cron.on_calendar_specs(schedule.cron, schedule.timezone)]
    timer = "\n".join(
        [
            "# written by `spike schedule add`; remove with `spike schedule remove " + schedule.name + "`",
            "[Unit]",
            f"Description=spike scheduled run {schedule.name} ({schedule.cron} {schedule.timezone})",
            "",
            "[Timer]",
            *calendars,
            # a run that was due while the machine was off fires once at boot
            "Persistent=true",
            "RandomizedDelaySec=0",
            f"Unit={schedule.unit}.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return {f"{schedule.unit}.service": service, f"{schedule.unit}.timer": timer}


def _systemctl(root: str | Path, *args: str) -> Command:
    argv = ["systemctl", *args]
    if _user_scope(root):
        argv.insert(1, "--user")
    return Command(tuple(argv))


# -- cron ----------------------------------------------------------------------------------------


def cron_line(schedule: Schedule, spike_home: Path, *, user: str | None) -> str:
    """One crontab line (with a user field for cron.d); output goes to the schedule's log."""
    log = spike_home / "schedules" / f"{schedule.name}.log"
    command = (
        f"cd {shlex.quote(schedule.workdir)} && SPIKE_HOME={shlex.quote(str(spike_home))} "
        f"{shlex.join(schedule.run_now_argv())} >> {shlex.quote(str(log))} 2>&1"
    )
    # `%` is a newline in crontab commands
    command = command.replace("%", "\\%")
    fields = cron.to_numeric(schedule.cron)
    return f"{fields} {user} {command}" if user else f"{fields} {command}"


def cron_file(schedule: Schedule, spike_home: Path, *, user: str) -> str:
    tz_note = f"# times are {schedule.timezone}: CRON_TZ is honoured by cronie; other crons use the host's time zone\n"
    return (
        f"# written by `spike schedule add`; remove with `spike schedule remove {schedule.name}`\n"
        + tz_note
        + f"CRON_TZ={schedule.timezone}\n"
        + "SHELL=/bin/sh\n"
        + cron_line(schedule, spike_home, user=user)
        + "\n"
    )


def _block_markers(name: str) -> tuple[str, str]:
    return f"# BEGIN spike schedule {name}", f"# END spike schedule {name}"


def crontab_without(crontab: str, name: str) -> str:
    """The user's crontab without schedule `name`'s block; everything else untouched."""
    begin, end = _block_markers(name)
    kept: list[str] = []
    inside = False
    for line in crontab.splitlines():
        if line.strip() == begin:
            inside = True
        elif line.strip() == end and inside:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def crontab_with(crontab: str, schedule: Schedule, spike_home: Path) -> str:
    """The user's crontab with schedule's block (replacing an older one of the same name)."""
    begin, end = _block_markers(schedule.name)
    base = crontab_without(crontab, schedule.name)
    block = f"{begin}\n{cron_line(schedule, spike_home, user=None)}\n{end}\n"
    return base + block


def _read_crontab() -> str:
    crontab = shutil.which("crontab")
    if crontab is None:
        raise InfrastructureError(
            "the cron backend needs `crontab`, which is not installed",
            fix="install cron, or use --backend systemd",
        )
    done = subprocess.run([crontab, "-l"], capture_output=True, text=True, check=False, timeout=30)
    # `crontab -l` fails with "no crontab for <user>" when there is none yet
    return done.stdout if done.returncode == 0 else ""


def _write_crontab(text: str) -> None:
    done = subprocess.run(
        ["crontab", "-"], input=text, capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise InfrastructureError(
            f"`crontab -` failed: {done.stderr.strip() or done.returncode}",
            fix="check that cron runs and that this user may use crontab (cron.allow/cron.deny)",
        )


# -- install, list, remove -----------------------------------------------------------------------


@dataclass(frozen=True)
class InstallPlan:
    """What installing (or removing) a schedule does: files to write, then commands to run."""

    files: dict[Path, str]
    commands: list[Command]
    user_crontab: bool = False  # edit the live user's crontab (only with ROOT `/` and a non-root user)


def install_plan(schedule: Schedule, *, spike_home: Path | None = None) -> InstallPlan:
    """Plan an install without doing anything (tests inspect this)."""
    home = (spike_home or state_dir()).resolve()
    root = Path(schedule.root)
    if schedule.backend == "systemd":
        unit_dir = systemd_unit_dir(root)
        files = {unit_dir / name: text for name, text in systemd_units(schedule, home).items()}
        commands = (
            [_systemctl(root, "daemon-reload"), _systemctl(root, "enable", "--now", f"{schedule.unit}.timer")]
            if _live(root)
            else []
        )
        return InstallPlan(files, commands)
    if _user_scope(root):
        return InstallPlan({}, [], user_crontab=True)
    user = "root" if _live(root) else getpass.getuser()
    return InstallPlan({root / "etc" / "cron.d" / schedule.unit: cron_file(schedule, home, user=user)}, [])


def _run(command: Command) -> None:
    try:
        done = subprocess.run(
            command.argv, capture_output=True, text=True, check=False, timeout=SYSTEMCTL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"`{command.display()}` failed: {exc}") from exc
    if done.returncode != 0:
        raise InfrastructureError(
            f"`{command.display()}` failed (exit {done.returncode}): {done.stderr.strip()}",
            fix="check `systemctl status` and the journal; the unit files are written, fix and re-run",
        )


def definition_path(name: str) -> Path:
    return schedules_dir() / f"{name}.json"


def load(name: str) -> Schedule:
    """A stored schedule; an unknown name is an error that lists the known ones."""
    validate_name(name)
    path = definition_path(name)
    if not path.exists():
        known = ", ".join(s.name for s in list_schedules()) or "none"
        raise BadInputError(
            f"no schedule named {name!r} (known: {known})",
            where=str(schedules_dir()),
            fix="see `spike schedule list`, or add it with `spike schedule add`",
        )
    try:
        return Schedule.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"schedule file is not valid: {exc}", where=str(path)) from exc


def add(schedule: Schedule) -> InstallPlan:
    """Validate, store and install a schedule; a name that exists already is an error."""
    validate(schedule)
    path = definition_path(schedule.name)
    if path.exists():
        raise BadInputError(
            f"schedule {schedule.name!r} exists already",
            where=str(path),
            fix=f"remove it first with `spike schedule remove {schedule.name}`, or pick another name",
        )
    plan = install_plan(schedule)
    path.parent.mkdir(parents=True, exist_ok=True)
    for file, text in plan.files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    if plan.user_crontab:
        _write_crontab(crontab_with(_read_crontab(), schedule, state_dir().resolve()))
    for command in plan.commands:
        _run(command)
    # the definition is written last: a failed install leaves no schedule that looks installed
    path.write_text(json.dumps(schedule.to_dict(), indent=2, sort_keys=True) + "\n")
    return plan


def list_schedules() -> list[Schedule]:
    """Every stored schedule, by name."""
    found = []
    for path in sorted(schedules_dir().glob("*.json")):
        if path.name.endswith(".state.json"):
            continue
        try:
            found.append(Schedule.from_dict(json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue
    return found


def remove(name: str) -> Schedule:
    """Disable (live root only) and delete a schedule's units or cron entry and its definition.

    Results and run directories stay.
    """
    schedule = load(name)
    plan = install_plan(schedule)
    if schedule.backend == "systemd" and _live(schedule.root):
        _run(_systemctl(schedule.root, "disable", "--now", f"{schedule.unit}.timer"))
    for file in plan.files:
        file.unlink(missing_ok=True)
    if plan.user_crontab:
        _write_crontab(crontab_without(_read_crontab(), schedule.name))
    if schedule.backend == "systemd" and _live(schedule.root):
        _run(_systemctl(schedule.root, "daemon-reload"))
    for leftover in (f"{name}.json", f"{name}.state.json", f"{name}.lock"):
        (schedules_dir() / leftover).unlink(missing_ok=True)
    return schedule


# -- CI export -----------------------------------------------------------------------------------


def _ci_run_script(schedule: Schedule) -> list[str]:
    args = shlex.join(schedule.spike_args)
    return [
        'export SPIKE_HOME="$PWD/.spike-home"',
        "set +e",
        f".venv/bin/python -m loadorch schedule run-now {schedule.name} --results-dir spike-results -- {args}",
        "code=$?",
        "set -e",
        'case "$code" in',
        '  0) echo "spike: passed" ;;',
        '  1) echo "spike: SLO failed (exit 1)" ;;',
        '  3) echo "spike: infrastructure failure (exit 3)" ;;',
        '  *) echo "spike: exit $code" ;;',
        "esac",
        'exit "$code"',
    ]


def export(name: str, format: str = "github-actions") -> str:
    """An equivalent CI job for a stored schedule: same cron, `make deps`, the spike run,
    the results (run dir, junit.xml, verdict.json) as artifacts; exit 1 or 3 fails the job.

    The CI job calls `spike schedule run-now <name> -- <args>`, which needs no stored
    definition, so JUnit and the verdict file are written there exactly as here.
    """
    schedule = load(name)
    if format not in EXPORT_FORMATS:
        raise BadInputError(
            f"export format {format!r} is not valid", fix=f"valid: {', '.join(EXPORT_FORMATS)}"
        )
    numeric = cron.to_numeric(schedule.cron)
    tz_note = (
        []
        if schedule.timezone.upper() == "UTC"
        else [f"# NOTE: the schedule's times are {schedule.timezone}; CI cron runs in UTC, adjust the hours."]
    )
    script = _ci_run_script(schedule)
    if format == "github-actions":
        lines = [
            f"# spike schedule {schedule.name}, exported by `spike schedule export`",
            *tz_note,
            f"name: spike-{schedule.name}",
            "on:",
            "  schedule:",
            f'    - cron: "{numeric}"',
            "  workflow_dispatch: {}",
            "jobs:",
            "  spike:",
            "    runs-on: ubuntu-latest",
            "    timeout-minutes: 180",
            "    steps:",
            "      - uses: actions/checkout@v4",
            "      - name: Install dependencies",
            "        run: make deps",
            f"      - name: spike {shlex.join(schedule.spike_args)}",
            "        run: |",
            *[f"          {line}" for line in script],
            "      - name: Upload run directory, JUnit and verdict",
            "        if: always()",
            "        uses: actions/upload-artifact@v4",
            "        with:",
            f"          name: spike-{schedule.name}",
            "          path: spike-results/",
            "          if-no-files-found: warn",
            "",
        ]
    else:
        lines = [
            f"# spike schedule {schedule.name}, exported by `spike schedule export`",
            "# GitLab keeps cron schedules outside this file: create one under",
            f'# CI/CD > Schedules with cron "{numeric}" (time zone {schedule.timezone}) on this branch.',
            f"spike-{schedule.name}:",
            "  rules:",
            '    - if: $CI_PIPELINE_SOURCE == "schedule"',
            '    - if: $CI_PIPELINE_SOURCE == "web"',
            "  timeout: 3h",
            "  before_script:",
            "    - make deps",
            "  script:",
            "    - |",
            *[f"      {line}" for line in script],
            "  artifacts:",
            "    when: always",
            "    paths:",
            "      - spike-results/",
            "    reports:",
            "      junit: spike-results/**/junit.xml",
            "",
        ]
    return "\n".join(lines)
