"""The aws options a real account needs: per-region instance types, subnets and VPCs, the image."""

from __future__ import annotations

import pytest

from loadorch.cli.fleet import aws_settings, parse_instance_types, parse_region_values
from loadorch.errors import BadInputError
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import load_profile
from loadorch.providers.aws import ARM64_AMI_SSM_PARAMETER, AwsProvider
from loadorch.providers.terraform.config import DEFAULT_AMI_SSM_PARAMETER


def test_instance_types_default_and_per_region() -> None:
    assert parse_instance_types("t3.micro") == ("t3.micro", ())
    assert parse_instance_types("c6i.large,ap-southeast-1=c7g.large") == (
        "c6i.large",
        (("ap-southeast-1", "c7g.large"),),
    )
    assert parse_instance_types("eu-west-2=t3.small") == ("c6i.large", (("eu-west-2", "t3.small"),))
    with pytest.raises(BadInputError, match="'ap-southeast-1=C7G' is not REGION=VALUE"):
        parse_instance_types("c6i.large,ap-southeast-1=C7G")


def test_region_values_refuse_what_is_not_an_id() -> None:
    assert parse_region_values("--subnet", "eu-west-2=subnet-0abc", r"subnet-[0-9a-f]+", "x") == (
        ("eu-west-2", "subnet-0abc"),
    )
    with pytest.raises(BadInputError, match="--subnet item 'eu-west-2=sg-1' is not REGION=VALUE"):
        parse_region_values("--subnet", "eu-west-2=sg-1", r"subnet-[0-9a-f]+", "x")
    with pytest.raises(BadInputError, match="names eu-west-2 twice"):
        parse_region_values("--subnet", "eu-west-2=subnet-1,eu-west-2=subnet-2", r"subnet-[0-9a-f]+", "x")


def test_the_fleet_spec_carries_every_regions_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = aws_settings(
        "t3.micro,us-east-1=t3.small",
        False,
        60,
        "203.0.113.7/32",
        None,
        None,
        subnet="eu-west-2=subnet-0abc",
        vpc="eu-west-2=vpc-0def",
        ssh_user="ubuntu",
        public_ip=False,
    )
    provider = AwsProvider(settings, cache_dir=tmp_path)
    plan = plan_run(
        load_profile("smoke").profile,
        PlanOptions(now_ms=0, provider="aws", regions=("eu-west-2", "us-east-1")),
    )
    spec = provider.fleet_spec(plan, "ssh-ed25519 AAAA test", "203.0.113.7/32")
    by_region = {r.region: r for r in spec.regions}
    assert by_region["eu-west-2"].instance_type == "t3.micro"
    assert by_region["us-east-1"].instance_type == "t3.small"
    assert (by_region["eu-west-2"].subnet_id, by_region["eu-west-2"].vpc_id) == ("subnet-0abc", "vpc-0def")
    assert by_region["us-east-1"].subnet_id is None
    assert {r.ssh_user for r in spec.regions} == {"ubuntu"}
    assert {r.associate_public_ip for r in spec.regions} == {False}
    assert {r.ami_ssm_parameter for r in spec.regions} == {DEFAULT_AMI_SSM_PARAMETER}
    assert spec.root_volume_size_gb == settings.root_gb == 20
    assert ARM64_AMI_SSM_PARAMETER.endswith("arm64")
