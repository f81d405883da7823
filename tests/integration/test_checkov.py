"""Real checkov on the injector-fleet module and on a root configuration spike generates.

Each scan's failed checks must be exactly the allow-list below, each of which the module's README
explains ("Security scan (checkov)"): a new finding fails the test, and so does a finding that
went away (then the allow-list and the README are out of date). checkov takes 10-60 s per scan,
so each target is scanned once per module; it runs with --skip-download and no API key, so it
makes no network call, and without spike's environment.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadorch.providers.terraform.config import FleetSpec, RegionFleet, injector_fleet_module
from loadorch.providers.terraform.runner import TerraformWorkspace

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform" / "modules" / "injector-fleet"
README = MODULE / "README.md"
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFa spike-checkov"
)
REGIONS = ("eu-west-2", "us-east-1")

# (check id, resource) -> why it stays: every one is "explained" in the README.
MODULE_FINDINGS = {
    ("CKV_AWS_88", "aws_instance.injector"): "public IP: spike connects over SSH from the operator",
    ("CKV_AWS_126", "aws_instance.injector"): "detailed monitoring: paid, and the agent samples itself",
    ("CKV_AWS_135", "aws_instance.injector"): "EBS-optimized: the default of every current type",
    ("CKV2_AWS_41", "aws_instance.injector"): "IAM role: the injectors call no AWS API",
}
ROOT_FINDINGS = {
    **MODULE_FINDINGS,
    ("CKV_TF_1", "module"): "module source: spike's own module, copied into the run at init",
    ("CKV_TF_2", "module"): "module source: spike's own module, copied into the run at init",
}
# Checks this module fixed, which must keep passing (a regression shows up as a new finding too).
FIXED = {
    "CKV_AWS_382": "egress to anywhere on every port: narrowed to the target and the bootstrap",
    "CKV_AWS_23": "every security group rule has a description",
    "CKV_AWS_79": "IMDSv2 only",
    "CKV_AWS_8": "encrypted root volume",
    "CKV_AWS_24": "no SSH from 0.0.0.0/0",
}


def checkov_command() -> list[str]:
    """checkov from its own virtualenv (`make checkov`), else from PATH."""
    own = Path(__file__).resolve().parents[2] / ".tools" / "checkov" / "bin" / "checkov"
    found = str(own) if own.is_file() else shutil.which("checkov")
    if found is None:
        pytest.fail("checkov is not installed: `make checkov` installs it into .tools/checkov")
    return [found]


def scan(directory: Path, work: Path) -> dict[str, Any]:
    """checkov's JSON report of `directory` (Terraform only, nothing downloaded or uploaded)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),  # checkov caches under HOME; keep it inside the test's directory
        "BC_SKIP_MAPPING": "TRUE",  # no download of Prisma Cloud's guideline mapping
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [
            *checkov_command(),
            "--directory",
            str(directory),
            "--framework",
            "terraform",
            "--skip-download",
            "--download-external-modules",
            "false",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    # checkov exits 1 when a check fails; anything else is a crash
    assert done.returncode in (0, 1), f"checkov exited {done.returncode}: {done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    assert isinstance(report, dict) and report.get("check_type") == "terraform", done.stdout[:2000]
    return report


def findings(report: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(check id, resource without module path and index) -> the modules it was found in."""
    found: dict[tuple[str, str], set[str]] = {}
    for check in report["results"]["failed_checks"]:
        resource = str(check["resource"])
        owner = re.match(r"^module\.(fleet_[a-z0-9_]+)\.", resource)
        if check["check_id"].startswith("CKV_TF_"):
            # module-source checks name the module block itself
            found.setdefault((check["check_id"], "module"), set()).add(resource)
            continue
        plain = re.sub(r"\[\d+\]$", "", re.sub(r"^module\.fleet_[a-z0-9_]+\.", "", resource))
        found.setdefault((check["check_id"], plain), set()).add(owner.group(1) if owner else "")
    return found


@pytest.fixture(scope="module")
def module_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("checkov-module")
    copy = work / "injector-fleet"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns(".terraform*"))
    return scan(copy, work)


@pytest.fixture(scope="module")
def root_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("checkov-root")
    spec = FleetSpec(
        run_id="checkov-1",
        owner="sre@example.com",
        expires_at="2030-01-01T00:00:00Z",
        ttl_minutes=60,
        # us-east-1 in a private subnet without public addresses, as a real account might have it
        regions=(
            RegionFleet(REGIONS[0], 2, "c6i.large"),
            RegionFleet(
                REGIONS[1],
                1,
                "c6i.large",
                vpc_id="vpc-0123456789abcdef0",
                subnet_id="subnet-0123456789abcdef0",
                associate_public_ip=False,
            ),
        ),
        operator_cidr="203.0.113.7/32",
        ssh_public_key=PUBLIC_KEY,
        module_source=injector_fleet_module(),
    )
    workspace = TerraformWorkspace(work / "terraform", {}, plugin_mirror=work)
    workspace.write_config(spec)
    yield scan(workspace.workdir, work)


def test_the_module_fails_only_the_explained_checks(module_report: dict[str, Any]) -> None:
    results = module_report["results"]
    assert results.get("parsing_errors", []) == [] and module_report["summary"]["parsing_errors"] == 0
    assert module_report["summary"]["resource_count"] >= 3  # key pair, security group, instances
    assert set(findings(module_report)) == set(MODULE_FINDINGS)
    passed = {check["check_id"] for check in results["passed_checks"]}
    assert set(FIXED) <= passed, set(FIXED) - passed


def test_the_generated_root_configuration_fails_only_the_explained_checks(
    root_report: dict[str, Any],
) -> None:
    results = root_report["results"]
    assert results.get("parsing_errors", []) == [] and root_report["summary"]["parsing_errors"] == 0
    # checkov followed the module into both regions (a JSON root configuration gave it nothing)
    resources = {check["resource"] for check in results["passed_checks"] + results["failed_checks"]}
    for region in REGIONS:
        name = "fleet_" + region.replace("-", "_")
        assert f"module.{name}.aws_security_group.injector" in resources
    found = findings(root_report)
    assert set(found) == set(ROOT_FINDINGS)
    for (check_id, resource), where in found.items():
        if check_id == "CKV_AWS_88":  # the public address: only where one is asked for
            assert where == {"fleet_eu_west_2"}, where
        elif check_id.startswith(("CKV_AWS", "CKV2_AWS")):
            assert where == {"fleet_eu_west_2", "fleet_us_east_1"}, (check_id, resource, where)
        else:
            assert where == {"fleet_eu_west_2", "fleet_us_east_1"}, (check_id, where)
    passed = {check["check_id"] for check in results["passed_checks"]}
    assert set(FIXED) <= passed, set(FIXED) - passed


def test_the_readme_explains_every_allowed_finding() -> None:
    text = README.read_text()
    section = text[text.index("## Security scan (checkov)") :]
    for check_id in {check for check, _ in ROOT_FINDINGS} | set(FIXED):
        row = re.search(rf"^\| `{check_id}` \|.*$", section, re.MULTILINE)
        assert row is not None, f"{check_id} is not in the README's checkov table"
        verdict = "explained" if check_id in {c for c, _ in ROOT_FINDINGS} else "fixed"
        assert f"| {verdict} |" in row.group(0), row.group(0)
