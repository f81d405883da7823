"""The HCL spike writes, read by Terraform itself: values come back as they went in, and a generated
root configuration is formatted as `terraform fmt` wants and valid with the real provider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loadorch.doctor import terraform_aws_provider_mirrors
from loadorch.providers.terraform.config import AssumeRole, FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.hcl import Block, render
from loadorch.providers.terraform.runner import TerraformWorkspace, cli_config_text, find_plugin_mirror

if shutil.which("terraform") is None:
    pytest.skip("terraform not found: `spike doctor` shows what is missing", allow_module_level=True)

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFa hcl"

# Everything the writer must keep literal: quotes, backslashes, control characters, interpolation
# and template sequences, non-ASCII text, keys that are keywords or not identifiers.
TRICKY: dict[str, Any] = {
    "quotes": 'say "hi" \\ bye',
    "lines": "one\ntwo\tthree\r",
    "interpolation": "${var.secret} and $${already} and %{ if true }x%{ endif }",
    "lone": "$5, 100%, {braces}, ~tilde",
    "unicode": "héllo ✓ 日本",
    "numbers": [0, 1, -7, 65535, 2**40],
    "flags": [True, False],
    "nested": {"null": "a keyword as a key", "aws:tag": "not an identifier", "eu-west-2": ["x"]},
    "empty": {},
    "none": None,
}


def terraform(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["terraform", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"terraform {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def base_env(work: Path) -> dict[str, str]:
    (work / "terraform.rc").write_text(cli_config_text(find_plugin_mirror(), None))
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": str(work / "terraform.rc"),
    }


def test_terraform_reads_every_value_back_as_written(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "main.tf").write_text(render((Block("output", ("tricky",), {"value": TRICKY}),)))
    env = base_env(tmp_path)
    terraform(["fmt", "-check", "-no-color", "main.tf"], config, env)
    terraform(["init", "-input=false", "-no-color"], config, env)
    terraform(["apply", "-auto-approve", "-input=false", "-no-color"], config, env)
    shown = json.loads(terraform(["output", "-json", "tricky"], config, env).stdout)
    assert shown == TRICKY


@pytest.mark.skipif(
    not terraform_aws_provider_mirrors(),
    reason="no filesystem mirror holds the hashicorp/aws provider: `spike doctor` shows what is missing",
)
def test_a_generated_root_configuration_is_formatted_and_valid(tmp_path: Path) -> None:
    spec = FleetSpec(
        run_id="hcl-1",
        owner="sre@example.com",
        expires_at="2030-01-01T00:00:00Z",
        ttl_minutes=60,
        regions=(
            RegionFleet("eu-west-2", 2, "t3.micro"),
            RegionFleet(
                "ap-southeast-1",
                1,
                "c7g.large",
                vpc_id="vpc-0123456789abcdef0",
                subnet_id="subnet-0123456789abcdef0",
                ami_id="ami-0123456789abcdef0",
                associate_public_ip=False,
                ssh_user="ubuntu",
            ),
        ),
        operator_cidr="203.0.113.7/32",
        ssh_public_key=PUBLIC_KEY,
        module_source=injector_fleet_module(),
        endpoint="http://127.0.0.1:5000",
        target_ports=(443, 8443),
        target_cidrs=("198.51.100.0/24", "2001:db8::/32"),
        assume_role=AssumeRole("arn:aws:iam::111122223333:role/spike-injectors", external_id="ext-1"),
        region_profiles={"ap-southeast-1": "loadtest-apac"},
    )
    workspace = TerraformWorkspace(tmp_path / "terraform", {})
    workspace.write_config(spec)
    env = base_env(tmp_path)
    terraform(["fmt", "-check", "-no-color", "main.tf"], workspace.workdir, env)
    terraform(["init", "-backend=false", "-input=false", "-no-color"], workspace.workdir, env)
    terraform(["validate", "-no-color"], workspace.workdir, env)
