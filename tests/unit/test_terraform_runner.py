"""Running Terraform without Terraform: the built commands, the environment it gets, the modes of
what it writes, and runs, interruption and the periodic progress report against a fake
`terraform` (the `-json` parser itself: test_terraform_ui.py)."""

from __future__ import annotations

import itertools
import json
import re
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from loadorch.errors import BadInputError, InfrastructureError, RunInterrupted
from loadorch.process import Command
from loadorch.providers.terraform.config import FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.hardening import make_private, private_command, terraform_env
from loadorch.providers.terraform.runner import (
    LEGACY_CONFIG_FILE,
    TerraformApplyError,
    TerraformWorkspace,
    cli_config_text,
    process_env,
)
from loadorch.providers.terraform.ui import RESOURCES_EVENT

# a recorded `terraform apply -json`, shared with the parser's tests
from test_terraform_ui import RECORDED_APPLY  # isort: skip

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFa spike-run"


def spec() -> FleetSpec:
    return FleetSpec(
        run_id="viral-x10-20260101-120000-a1b2c3",
        owner="sre@example.com",
        expires_at="2026-01-01T14:00:00Z",
        ttl_minutes=120,
        regions=(RegionFleet("eu-west-2", 2, "t3.micro"), RegionFleet("us-east-1", 1, "t3.micro")),
        operator_cidr="203.0.113.7/32",
        ssh_public_key=PUBLIC_KEY,
        module_source=injector_fleet_module(),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- commands and files ----------------------------------------------------------------------------------


def test_commands_are_values_with_automation_settings(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(tmp_path, {"AWS_PROFILE": "ops"}, plugin_mirror=Path("/opt/tf-plugins"))
    assert workspace.init_command().argv == ("terraform", "init", "-input=false", "-no-color")
    apply = workspace.apply_command()
    assert apply.argv[:5] == ("terraform", "apply", "-auto-approve", "-input=false", "-json")
    # destroy skips the refresh walk (what is gone already is deleted without complaint)
    assert workspace.destroy_command().argv[:6] == (
        "terraform",
        "destroy",
        "-auto-approve",
        "-input=false",
        "-refresh=false",
        "-json",
    )
    assert workspace.output_command().argv == ("terraform", "output", "-json", "-no-color")
    assert apply.cwd == tmp_path.resolve()
    assert apply.env["TF_IN_AUTOMATION"] == "1"
    assert apply.env["TF_INPUT"] == "0"
    assert apply.env["CHECKPOINT_DISABLE"] == "1"
    assert apply.env["TF_CLI_CONFIG_FILE"] == str(tmp_path.resolve() / "terraform.rc")
    assert apply.env["AWS_PROFILE"] == "ops"  # credentials travel in the environment only


def test_terraform_collects_garbage_less_often_unless_gogc_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    workspace = TerraformWorkspace(Path("/w"), {}, plugin_mirror=Path("/opt/tf-plugins"))
    assert process_env(workspace.apply_command())["GOGC"] == "400"
    monkeypatch.setenv("GOGC", "150")
    monkeypatch.setenv("GOMEMLIMIT", "2GiB")
    env = process_env(workspace.destroy_command())
    assert (env["GOGC"], env["GOMEMLIMIT"]) == ("150", "2GiB")


def test_terraform_never_inherits_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_LOG", "trace")
    monkeypatch.setenv("TF_LOG_PATH", "/tmp/tf.log")
    monkeypatch.setenv("TF_WORKSPACE", "other")
    monkeypatch.setenv("TF_CLI_ARGS_apply", "-destroy")
    env = process_env(Command(("terraform",), env={"TF_LOG_PROVIDER": "debug", "TF_INPUT": "0"}))
    assert not [key for key in env if key.startswith(("TF_LOG", "TF_CLI_ARGS")) or key == "TF_WORKSPACE"]
    assert env["TF_INPUT"] == "0"


MACHINE_ENV = {
    # what Terraform and the provider need
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/sre",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "HTTPS_PROXY": "http://proxy.invalid:3128",
    "no_proxy": "169.254.169.254",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca.pem",
    "AWS_PROFILE": "loadtest",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "example-secret",
    "AWS_SESSION_TOKEN": "example-session",
    "AWS_REGION": "eu-west-2",
    "AWS_DEFAULT_REGION": "eu-west-2",
    "AWS_CONFIG_FILE": "/home/sre/.aws/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/home/sre/.aws/credentials",
    "AWS_CA_BUNDLE": "/etc/ssl/certs/ca.pem",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token",
    "AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/ci",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
    "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:5000",
    "TF_PLUGIN_CACHE_DIR": "/var/cache/tf",
    "TF_TOKEN_app_terraform_io": "registry-token",
    # what it must not see
    "SPIKE_INFLUX_TOKEN": "influx-secret",
    "SPIKE_GRAFANA_KEY": "grafana-secret",
    "SPIKE_WEBHOOK_URL": "https://hooks.invalid/x",
    "GITHUB_TOKEN": "ghp_example",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
    "PYTHONPATH": "/work/main",
    "TF_LOG": "trace",
    "TF_CLI_ARGS": "-lock=false",
    "TF_DATA_DIR": "/elsewhere",
}
KEPT = {key for key in MACHINE_ENV if not key.startswith("SPIKE_")} - {
    "GITHUB_TOKEN",
    "SSH_AUTH_SOCK",
    "PYTHONPATH",
    "TF_LOG",
    "TF_CLI_ARGS",
    "TF_DATA_DIR",
}


def test_terraform_gets_the_allow_list_of_the_environment_and_its_own_settings() -> None:
    env = terraform_env(MACHINE_ENV, {"TF_INPUT": "0", "AWS_PROFILE": "other", "FAKE_SETTING": "1"})
    assert set(env) == KEPT | {"TF_INPUT", "FAKE_SETTING"}
    assert env["AWS_PROFILE"] == "other"  # what the workspace is given wins over the machine's
    for secret in ("influx-secret", "grafana-secret", "ghp_example"):
        assert secret not in env.values()
    # extra settings are the caller's own, but never Terraform logging or extra arguments
    assert terraform_env({}, {"TF_LOG": "debug", "TF_CLI_ARGS_destroy": "-target=x"}) == {}
    assert terraform_env(MACHINE_ENV, {}) == {key: MACHINE_ENV[key] for key in KEPT}


def test_cli_config_installs_hashicorp_providers_from_the_mirror() -> None:
    text = cli_config_text(Path("/opt/tf-plugins"), Path("/var/cache/tf"))
    assert 'path    = "/opt/tf-plugins"' in text
    assert 'include = ["registry.terraform.io/hashicorp/*"]' in text
    assert 'plugin_cache_dir = "/var/cache/tf"' in text
    assert "provider_installation" not in cli_config_text(None, None)


def test_write_config_writes_the_config_and_cli_config_privately(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(
        tmp_path / "tf", {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}, plugin_mirror=Path("/m")
    )
    path = workspace.write_config(spec())
    assert path.name == "main.tf"
    assert 'module "fleet_eu_west_2" {' in path.read_text()
    assert "/m" in (tmp_path / "tf" / "terraform.rc").read_text()
    assert mode(tmp_path / "tf") == 0o700
    for written in (tmp_path / "tf").iterdir():
        assert "s3cr3t" not in written.read_text()
        assert mode(written) == 0o600, written.name


def test_a_run_directory_of_an_older_spike_is_still_destroyed_from(tmp_path: Path) -> None:
    workdir = tmp_path / "tf"
    workdir.mkdir()
    (workdir / LEGACY_CONFIG_FILE).write_text("{}")
    workspace = TerraformWorkspace(workdir, {}, plugin_mirror=Path("/m"))
    assert workspace.has_config()  # so destroy runs rather than saying "nothing to destroy"
    workspace.write_config(spec())  # and a new config replaces it: both would declare everything twice
    assert not (workdir / LEGACY_CONFIG_FILE).exists()
    assert workspace.has_config()


def test_terraform_runs_under_umask_077_as_itself() -> None:
    command = Command(("terraform", "apply", "-json"), cwd=Path("/w"), env={"TF_INPUT": "0"})
    wrapped = private_command(command)
    assert wrapped.argv == (
        "/bin/sh",
        "-c",
        'umask 077 && exec "$@"',
        "terraform",
        "terraform",
        "apply",
        "-json",
    )
    assert (wrapped.cwd, wrapped.env) == (command.cwd, command.env)


def test_make_private_closes_the_directory_and_its_files_but_not_the_provider(tmp_path: Path) -> None:
    workdir = tmp_path / "tf"
    (workdir / ".terraform" / "providers").mkdir(parents=True)
    provider = workdir / ".terraform" / "providers" / "terraform-provider-aws"
    provider.write_text("#!/bin/sh\n")
    provider.chmod(0o755)
    for name in ("terraform.tfstate", "terraform.tfstate.backup", "tfplan", "terraform-apply.log"):
        (workdir / name).write_text("x")
        (workdir / name).chmod(0o644)
    workdir.chmod(0o755)
    make_private(workdir)
    assert mode(workdir) == 0o700
    assert {p.name: mode(p) for p in workdir.iterdir() if p.is_file()} == {
        "terraform.tfstate": 0o600,
        "terraform.tfstate.backup": 0o600,
        "tfplan": 0o600,
        "terraform-apply.log": 0o600,
    }
    assert mode(provider) == 0o755  # still executable
    make_private(tmp_path / "absent")  # nothing there yet: nothing to do


# -- running and interrupting, against a fake terraform ------------------------------------------------------

FAKE_TERRAFORM = """\
#!{python}
# Stands in for terraform: prints the lines of $FAKE_TF_LINES, then exits or waits as told.
# SIGINT is recorded and answered the way Terraform does: a message, then exit 1.
import json, os, signal, sys, time
record = open(os.environ["FAKE_TF_RECORD"], "a")
def interrupted(signum, frame):
    record.write(f"SIGINT {{time.monotonic()}}\\n")
    record.flush()
    print(json.dumps({{"type": "log", "@message": "Interrupt received. Gracefully shutting down..."}}), flush=True)
    sys.exit(1)
signal.signal(signal.SIGINT, interrupted)
record.write(f"START {{' '.join(sys.argv[1:])}}\\n")
record.flush()
for line in open(os.environ["FAKE_TF_LINES"]):
    print(line, end="", flush=True)
    if '"apply_start"' in line:
        record.write(f"CREATE {{time.monotonic()}}\\n")
        record.flush()
record.write(f"UMASK {{os.umask(0o022):03o}}\\n")
record.write(f"ENV {{json.dumps(sorted(os.environ))}}\\n")
record.flush()
# what Terraform itself would write: state under its umask, a log someone made readable
open("terraform.tfstate", "w").write("{{}}")
open("crash.log", "w").write("x")
os.chmod("crash.log", 0o644)
mode = os.environ.get("FAKE_TF_MODE", "ok")
if mode == "wait":
    time.sleep(60)
if mode == "linger":
    time.sleep(float(os.environ["FAKE_TF_LINGER_S"]))
sys.exit(1 if mode == "fail" else 0)
"""

CREATE_START = json.dumps(
    {
        "type": "apply_start",
        "@message": "module.fleet_eu_west_2.aws_instance.injector[0]: Creating...",
        "hook": {"resource": {"addr": "module.fleet_eu_west_2.aws_instance.injector[0]"}, "action": "create"},
    }
)


def fake_workspace(
    tmp_path: Path, lines: list[str], mode: str, *, linger_s: float = 0.0, **options: float
) -> TerraformWorkspace:
    fake = tmp_path / "terraform"
    fake.write_text(FAKE_TERRAFORM.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "lines.jsonl").write_text("".join(line + "\n" for line in lines))
    env = {
        "FAKE_TF_LINES": str(tmp_path / "lines.jsonl"),
        "FAKE_TF_RECORD": str(tmp_path / "record.txt"),
        "FAKE_TF_MODE": mode,
        "FAKE_TF_LINGER_S": str(linger_s),
    }
    return TerraformWorkspace(
        tmp_path / "tf", env, terraform=str(fake), plugin_mirror=tmp_path, settle_s=0.4, **options
    )


def record(tmp_path: Path) -> list[str]:
    return (tmp_path / "record.txt").read_text().splitlines()


def test_apply_reports_progress_and_times_terraform(tmp_path: Path) -> None:
    workspace = fake_workspace(tmp_path, RECORDED_APPLY.splitlines()[:5], "ok")
    seen: list[tuple[str, str, str]] = []
    run = workspace.apply(lambda *event: seen.append(event))
    assert run.returncode == 0 and not run.interrupted
    assert [e[1] for e in seen] == [
        "version",
        "apply_start",
        "planned_change",
        "change_summary",
        RESOURCES_EVENT,  # the plan is known: us-east-1 has one resource to create
        "apply_start",
        RESOURCES_EVENT,  # and once more when Terraform has exited
    ]
    counts = [(e[0], re.sub(r"\(\d+ s\)", "(N s)", e[2])) for e in seen if e[1] == RESOURCES_EVENT]
    assert counts == [("us-east-1", "0/1 created (N s)")] * 2
    assert run.summary == "Plan: 7 to add, 0 to change, 0 to destroy."
    assert 0 < workspace.terraform_seconds() < 10
    assert record(tmp_path)[0].startswith("START apply -auto-approve -input=false -json")
    assert (tmp_path / "tf" / "terraform-apply.log").read_text().startswith('{"@level":"info"')


def test_a_failed_apply_names_the_region_and_the_reason(tmp_path: Path) -> None:
    workspace = fake_workspace(tmp_path, RECORDED_APPLY.splitlines(), "fail")
    with pytest.raises(TerraformApplyError) as info:
        workspace.apply()
    error = info.value
    assert isinstance(error, InfrastructureError)
    assert error.regions == ["us-east-1"]
    assert error.where == "us-east-1"
    assert "terraform apply failed in us-east-1" in error.message
    assert "InvalidKeyPair.Duplicate" in error.message
    assert error.fix is not None and "destroy" in error.fix


def test_ctrl_c_in_the_caller_stops_terraform_with_one_sigint_once_creates_have_settled(
    tmp_path: Path,
) -> None:
    workspace = fake_workspace(tmp_path, [CREATE_START], "wait")

    def ctrl_c_on_create(region: str, event: str, detail: str) -> None:
        if event == "apply_start":
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        workspace.apply(ctrl_c_on_create)
    assert time.monotonic() - started < 20  # it did not wait out the fake's 60 s
    lines = record(tmp_path)
    sigints = [float(line.split()[1]) for line in lines if line.startswith("SIGINT")]
    create = next(float(line.split()[1]) for line in lines if line.startswith("CREATE"))
    assert len(sigints) == 1  # a second SIGINT would make Terraform abandon its state
    assert sigints[0] - create >= 0.4  # the create call had time to return first
    assert workspace.runs[-1].interrupted
    assert workspace.terminate() is False  # nothing is running any more


def test_terminate_from_another_thread_makes_apply_raise_run_interrupted(tmp_path: Path) -> None:
    workspace = fake_workspace(tmp_path, [CREATE_START], "wait")
    errors: list[BaseException] = []
    seen = threading.Event()

    def apply() -> None:
        try:
            workspace.apply(lambda region, event, detail: seen.set())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=apply)
    thread.start()
    assert seen.wait(10)
    assert workspace.terminate(grace_s=10) is True
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RunInterrupted)
    assert "interrupted" in errors[0].message and "terraform.tfstate" in errors[0].message
    assert [line for line in record(tmp_path) if line.startswith("SIGINT")]


def test_settling_gives_up_after_its_limit(tmp_path: Path) -> None:
    # A create that never gets old enough never settles; SIGINT goes out after settle_max_s anyway.
    workspace = fake_workspace(tmp_path, [CREATE_START], "wait", settle_max_s=0.3)
    workspace.settle_s = 1000.0
    errors: list[BaseException] = []
    seen = threading.Event()

    def apply() -> None:
        try:
            workspace.apply(lambda region, event, detail: seen.set())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=apply)
    thread.start()
    assert seen.wait(10)
    started = time.monotonic()
    assert workspace.terminate(grace_s=10) is True
    assert time.monotonic() - started < 5
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RunInterrupted)


def test_what_terraform_writes_is_private_and_its_environment_holds_no_spike_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKE_INFLUX_TOKEN", "influx-secret")
    monkeypatch.setenv("SPIKE_GRAFANA_KEY", "grafana-secret")
    monkeypatch.setenv("AWS_PROFILE", "loadtest")
    monkeypatch.setenv("TF_LOG", "trace")
    workspace = fake_workspace(tmp_path, RECORDED_APPLY.splitlines()[:3], "ok")
    workspace.apply()
    lines = record(tmp_path)
    assert "UMASK 077" in lines
    seen = set(json.loads(next(line for line in lines if line.startswith("ENV "))[4:]))
    assert {"AWS_PROFILE", "PATH", "HOME", "TF_IN_AUTOMATION", "FAKE_TF_LINES"} <= seen
    assert not seen & {"SPIKE_INFLUX_TOKEN", "SPIKE_GRAFANA_KEY", "TF_LOG"}
    workdir = tmp_path / "tf"
    assert mode(workdir) == 0o700
    for name in ("terraform.tfstate", "crash.log", "terraform-apply.log"):
        assert mode(workdir / name) == 0o600, name


# A plan of two resources in two regions, then silence (the fake lingers) while "creating".
PLAN_THEN_SILENCE = [
    json.dumps(
        {
            "type": "planned_change",
            "@message": f"module.fleet_{r}.aws_key_pair.injector: Plan to create",
            "change": {"resource": {"addr": f"module.fleet_{r}.aws_key_pair.injector"}, "action": "create"},
        }
    )
    for r in ("eu_west_2", "us_east_1")
] + [json.dumps({"type": "change_summary", "@message": "Plan: 2 to add, 0 to change, 0 to destroy."})]


def test_progress_is_reported_on_time_while_terraform_prints_nothing(tmp_path: Path) -> None:
    workspace = fake_workspace(tmp_path, PLAN_THEN_SILENCE, "linger", linger_s=30.0, progress_period_s=0.2)
    reports: list[tuple[float, str, str]] = []
    enough = threading.Event()

    def progress(region: str, event: str, detail: str) -> None:
        if event == RESOURCES_EVENT:
            reports.append((time.monotonic(), region, detail))
            if len(reports) >= 12:
                enough.set()

    errors: list[BaseException] = []

    def apply() -> None:
        try:
            workspace.apply(progress)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=apply)
    thread.start()
    try:
        assert enough.wait(20), f"only {len(reports)} progress reports: {reports}"
    finally:
        workspace.terminate(grace_s=10)
        thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RunInterrupted)  # stopped by us, mid-silence
    counted = [r for r in reports if r[2].startswith("0/1 created")]
    assert {r[1] for r in counted} == {"eu-west-2", "us-east-1"}
    # every period, one line per region, while the fake printed nothing at all
    times = sorted({round(t, 2) for t, region, _ in counted if region == "eu-west-2"})
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and max(gaps) < 0.2 + 1.0, gaps  # period plus generous scheduling slack
    assert all(d.endswith(" s)") for _, _, d in reports)


def test_a_finished_apply_reports_its_final_counts(tmp_path: Path) -> None:
    complete = json.dumps(
        {
            "type": "apply_complete",
            "@message": "module.fleet_eu_west_2.aws_key_pair.injector: Creation complete after 0s",
            "hook": {
                "resource": {"addr": "module.fleet_eu_west_2.aws_key_pair.injector"},
                "action": "create",
            },
        }
    )
    workspace = fake_workspace(tmp_path, [*PLAN_THEN_SILENCE, complete], "ok")
    reports: list[tuple[str, str]] = []
    workspace.apply(
        lambda region, event, detail: event == RESOURCES_EVENT and reports.append((region, detail))
    )
    # once when the plan is known, once at the end (the default period of 10 s never came)
    assert [(r, d.split(" (")[0]) for r, d in reports] == [
        ("eu-west-2", "0/1 created"),
        ("us-east-1", "0/1 created"),
        ("eu-west-2", "1/1 created"),
        ("us-east-1", "0/1 created"),
    ]


def test_a_missing_terraform_is_a_preflight_error(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(tmp_path, {}, terraform=str(tmp_path / "absent"), plugin_mirror=tmp_path)
    with pytest.raises(BadInputError, match="not found") as info:
        workspace.init()
    assert info.value.fix is not None and "spike doctor" in info.value.fix
