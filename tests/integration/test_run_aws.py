"""`spike run --provider aws` for real against a moto server: Terraform creates, destroys, and
nothing tagged with the run is left, whatever happens.

Moto's instances are records, not machines: nothing answers SSH on them and their console shows
no host keys. So a run here goes as far as a real one can without machines: bad input refused
before any AWS call; apply in two regions, then a refusal to trust unverified host keys, then the
armed destroy; Ctrl-C during apply, then destroy. The SSH path itself is tested with real sshd
hosts (test_run_static.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import spike_run, write_profile
from moto_server import MotoServer

from loadorch.cloud.tags import RUN_ID
from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.errors import ExitCode
from loadorch.target.server import TargetServer

if shutil.which("terraform") is None or not terraform_aws_provider_mirrors():
    pytest.skip(
        "terraform or the hashicorp/aws provider mirror is missing (`spike doctor` shows what is missing)",
        allow_module_level=True,
    )

REGIONS = ("eu-west-2", "us-east-1")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in moto.env.items():
        monkeypatch.setenv(name, value)
    return moto.env


def tagged(moto: MotoServer, run_id: str) -> list[str]:
    """Everything still carrying the run's tag, in both regions (terminated instances excluded)."""
    found = []
    for region in REGIONS:
        ec2 = moto.client("ec2", region)
        filters = [{"Name": f"tag:{RUN_ID}", "Values": [run_id]}]
        for reservation in ec2.describe_instances(Filters=filters)["Reservations"]:
            found += [
                f"{region}/{i['InstanceId']}"
                for i in reservation["Instances"]
                if i["State"]["Name"] != "terminated"
            ]
        found += [
            f"{region}/{g['GroupId']}"
            for g in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
        ]
        found += [f"{region}/{k['KeyName']}" for k in ec2.describe_key_pairs(Filters=filters)["KeyPairs"]]
    return found


def aws_args(endpoint: str, target: TargetServer, *extra: str) -> list[str]:
    return [
        "--provider",
        "aws",
        "--regions",
        ",".join(REGIONS),
        "--target",
        target.url,
        "--aws-endpoint",
        endpoint,
        "--operator-cidr",
        "127.0.0.1/32",
        "--instance-type",
        "t3.medium",
        *extra,
    ]


def run_ids(runs_dir: Path) -> list[str]:
    return [p.name for p in runs_dir.iterdir()] if runs_dir.is_dir() else []


@pytest.mark.parametrize(
    ("duration_s", "extra", "message"),
    [
        (10, ["--operator-cidr", "0.0.0.0/0"], "operator CIDR 0.0.0.0/0 would open the injectors"),
        (10, ["--regions", "eu-west-2,mars-north-1"], "unknown AWS region 'mars-north-1'"),
        (2400, ["--ttl", "10"], "longer than the injectors' TTL of 10 min"),  # 40 min of load
        (10, ["--max-cost", "0.001"], "over the budget of $0.00"),
    ],
)
def test_bad_input_is_refused_before_any_aws_call_but_the_credentials_check(
    tmp_path: Path,
    target: TargetServer,
    moto: MotoServer,
    aws_env: dict[str, str],
    duration_s: int,
    extra: list[str],
    message: str,
) -> None:
    # the provider's preflight asks STS who we are (moto answers); the refusals need no other call
    profile = write_profile(tmp_path, rate_per_s=5, duration_s=duration_s)
    args = aws_args(moto.endpoint, target, *extra)
    result = spike_run(profile, tmp_path / "runs", *args)
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert message in result.output
    # no Terraform configuration was even written
    assert not list((tmp_path / "runs").glob("*/terraform"))


def test_credentials_are_checked_before_anything_is_written(
    tmp_path: Path, target: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an endpoint where nothing answers: STS GetCallerIdentity fails, and the run stops there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    profile = write_profile(tmp_path, rate_per_s=5, duration_s=10)
    result = spike_run(profile, tmp_path / "runs", *aws_args("http://127.0.0.1:9", target))
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert "cannot reach http://127.0.0.1:9" in result.output
    assert "fix: check --aws-endpoint http://127.0.0.1:9" in result.output
    assert run_ids(tmp_path / "runs") == []


def test_apply_in_two_regions_then_unverifiable_host_keys_destroy_everything(
    tmp_path: Path, target: TargetServer, moto: MotoServer, aws_env: dict[str, str]
) -> None:
    profile = write_profile(tmp_path, rate_per_s=20, duration_s=10)
    result = spike_run(
        profile, tmp_path / "runs", *aws_args(moto.endpoint, target, "--host-key-timeout", "1")
    )
    assert result.exit_code == ExitCode.INFRASTRUCTURE, result.output
    # apply really created the fleet in both regions before the refusal ...
    (run_id,) = run_ids(tmp_path / "runs")
    for region in REGIONS:
        assert re.search(
            rf"{region} apply_complete: aws_instance.injector\[0\]: Creation complete", result.output
        )
    assert "refusing to trust an unverified key" in result.output
    # ... and the armed destroy removed it, which spike checked with boto3 in every region
    assert f"nothing tagged SpikeRunId={run_id} remains in eu-west-2, us-east-1" in result.output
    assert tagged(moto, run_id) == []
    # the private key stayed on this machine: only the public half is in Terraform's files
    tf_files = "".join(p.read_text() for p in (tmp_path / "runs" / run_id / "terraform").glob("*.tf*"))
    assert "PRIVATE KEY" not in tf_files and "ssh-ed25519 " in tf_files


def test_ctrl_c_during_apply_leaves_nothing(
    tmp_path: Path, target: TargetServer, moto: MotoServer, aws_env: dict[str, str]
) -> None:
    profile = write_profile(tmp_path, rate_per_s=20, duration_s=10)
    runs_dir = tmp_path / "runs"
    argv = [
        sys.executable,
        "-m",
        "loadorch",
        "run",
        "--profile",
        str(profile),
        "--runs-dir",
        str(runs_dir),
        *aws_args(moto.endpoint, target, "--host-key-timeout", "1"),
    ]
    log = (tmp_path / "spike.log").open("w+")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **aws_env})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "apply_start" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()
            time.sleep(0.1)
        assert "apply_start" in Path(log.name).read_text()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = Path(log.name).read_text()
    assert code == ExitCode.INTERRUPTED, output
    (run_id,) = run_ids(runs_dir)
    assert f"nothing tagged SpikeRunId={run_id} remains" in output
    assert tagged(moto, run_id) == []


def test_sigkill_of_spike_during_apply_then_recovery_leaves_nothing(
    tmp_path: Path, target: TargetServer, moto: MotoServer, aws_env: dict[str, str]
) -> None:
    """spike dies mid-apply: Terraform is interrupted with it and saves its state; recovery destroys."""
    import psutil

    profile = write_profile(tmp_path, rate_per_s=20, duration_s=10)
    runs_dir = tmp_path / "runs"
    argv = [sys.executable, "-m", "loadorch", "run", "--profile", str(profile), "--runs-dir", str(runs_dir)]
    argv += aws_args(moto.endpoint, target, "--host-key-timeout", "60")
    log = (tmp_path / "spike.log").open("w+")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **aws_env})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "Creation complete" not in Path(log.name).read_text():
            assert proc.poll() is None, Path(log.name).read_text()
            time.sleep(0.1)
        assert "Creation complete" in Path(log.name).read_text()
        terraform = [c for c in psutil.Process(proc.pid).children(recursive=True) if "terraform" in c.name()]
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Terraform got SIGINT from the kernel when spike died: it stops and saves what it created
    psutil.wait_procs(terraform, timeout=120)
    assert not any(t.is_running() and t.status() != psutil.STATUS_ZOMBIE for t in terraform)
    (run_id,) = run_ids(runs_dir)
    assert tagged(moto, run_id), "the test killed spike after something was created"
    recovered = subprocess.run(
        [sys.executable, "-m", "loadorch", "runs", "recover", "--runs-dir", str(runs_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **aws_env},
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "verdict aborted" in recovered.stdout and "terraform destroyed the fleet" in recovered.stdout
    # what a create call in flight left outside the state is found by its tag and removed too
    assert f"nothing tagged SpikeRunId={run_id} remains" in recovered.stdout
    assert tagged(moto, run_id) == []
