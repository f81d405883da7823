"""The root configuration of the `aws` provider without Terraform: its blocks and HCL text, the
validation of every option before anything runs, and the inventory read back from `terraform
output -json`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from loadorch.cloud.tags import run_tags
from loadorch.errors import BadInputError, InfrastructureError
from loadorch.providers.terraform.config import (
    DEFAULT_AMI_SSM_PARAMETER,
    ENDPOINT_SERVICES,
    AssumeRole,
    FleetSpec,
    RegionFleet,
    injector_fleet_module,
    module_name,
    operator_network,
    render_root_config,
    role_session_name,
    root_config,
    session_name_for,
    target_ports_for,
)
from loadorch.providers.terraform.hcl import Block, Ref
from loadorch.providers.terraform.inventory import inventory_from_outputs, parse_inventory
from loadorch.providers.terraform.runner import TerraformWorkspace
from loadorch.providers.terraform.ui import ALL_REGIONS, region_of_address

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFa spike-run"
ROLE = "arn:aws:iam::111122223333:role/spike-injectors"


def spec(**changes: object) -> FleetSpec:
    base = FleetSpec(
        run_id="viral-x10-20260101-120000-a1b2c3",
        owner="sre@example.com",
        expires_at="2026-01-01T14:00:00Z",
        ttl_minutes=120,
        regions=(
            RegionFleet("eu-west-2", 2, "t3.micro"),
            RegionFleet("us-east-1", 1, "t3.micro", use_spot=True),
        ),
        operator_cidr="203.0.113.7/32",
        ssh_public_key=PUBLIC_KEY,
        module_source=Path("/opt/spike/terraform/modules/injector-fleet"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def top(config: tuple[Block, ...], type_: str) -> list[Block]:
    return [block for block in config if block.type == type_]


def module(config: tuple[Block, ...], region: str) -> Block:
    (found,) = [b for b in top(config, "module") if b.labels == (module_name(region),)]
    return found


# -- the root configuration ------------------------------------------------------------------------


def test_one_aliased_provider_and_one_module_per_region() -> None:
    config = root_config(spec())
    providers = top(config, "provider")
    assert [(p.labels, p.attributes["alias"], p.attributes["region"]) for p in providers] == [
        (("aws",), "eu-west-2", "eu-west-2"),
        (("aws",), "us-east-1", "us-east-1"),
    ]
    assert [m.labels for m in top(config, "module")] == [("fleet_eu_west_2",), ("fleet_us_east_1",)]
    eu = module(config, "eu-west-2").attributes
    assert eu["providers"] == {"aws": Ref("aws.eu-west-2")}
    assert eu["source"] == "/opt/spike/terraform/modules/injector-fleet"
    assert (eu["region_label"], eu["instance_count"], eu["instance_type"], eu["use_spot"]) == (
        "eu-west-2",
        2,
        "t3.micro",
        False,
    )
    assert module(config, "us-east-1").attributes["use_spot"] is True
    assert eu["tags"] == run_tags(
        "viral-x10-20260101-120000-a1b2c3", "sre@example.com", "2026-01-01T14:00:00Z", "eu-west-2"
    )
    assert module(config, "us-east-1").attributes["tags"]["SpikeRegion"] == "us-east-1"  # type: ignore[index]
    (settings,) = top(config, "terraform")
    assert settings.block("required_providers").attributes["aws"]["source"] == "hashicorp/aws"  # type: ignore[index]
    # one root output exposes every region's module outputs
    (output,) = top(config, "output")
    assert output.labels == ("fleets",)
    assert output.attributes["value"] == {
        "eu-west-2": Ref("module.fleet_eu_west_2"),
        "us-east-1": Ref("module.fleet_us_east_1"),
    }


def test_defaults_a_real_account_would_get() -> None:
    eu = module(root_config(spec()), "eu-west-2").attributes
    assert eu["associate_public_ip"] is True  # explicit: spike SSHes from the operator's machine
    assert eu["ssh_user"] == "ec2-user"
    assert eu["root_volume_size_gb"] == 20  # what the cost estimate must use too
    assert eu["ami_ssm_parameter"] == DEFAULT_AMI_SSM_PARAMETER
    assert eu["target_ports"] == [443]
    assert eu["target_cidrs"] == ["0.0.0.0/0"]
    for absent in ("ami_id", "vpc_id", "subnet_id"):
        assert absent not in eu  # the module's null defaults: the SSM image, the default VPC


def test_region_options_reach_that_region_only() -> None:
    private = RegionFleet(
        "us-east-1",
        1,
        "c7g.large",
        vpc_id="vpc-0123456789abcdef0",
        subnet_id="subnet-0123456789abcdef0",
        ami_id="ami-0123456789abcdef0",
        associate_public_ip=False,
        ssh_user="ubuntu",
    )
    config = root_config(spec(regions=(RegionFleet("eu-west-2", 2), private), root_volume_size_gb=40))
    us = module(config, "us-east-1").attributes
    assert (us["vpc_id"], us["subnet_id"], us["ami_id"], us["associate_public_ip"], us["ssh_user"]) == (
        "vpc-0123456789abcdef0",
        "subnet-0123456789abcdef0",
        "ami-0123456789abcdef0",
        False,
        "ubuntu",
    )
    assert "ami_ssm_parameter" not in us  # a literal image: no parameter to resolve
    assert us["instance_type"] == "c7g.large"
    eu = module(config, "eu-west-2").attributes
    assert "vpc_id" not in eu and eu["associate_public_ip"] is True and eu["ssh_user"] == "ec2-user"
    assert eu["root_volume_size_gb"] == us["root_volume_size_gb"] == 40


def test_egress_options_are_canonical() -> None:
    config = root_config(
        spec(
            target_ports=(8443, 443, 8443), target_cidrs=("198.51.100.7", "198.51.100.7/32", "2001:db8::/32")
        )
    )
    eu = module(config, "eu-west-2").attributes
    assert eu["target_ports"] == [443, 8443]
    assert eu["target_cidrs"] == ["198.51.100.7/32", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("url", "ports"),
    [
        ("https://shop.example.com", (443,)),
        ("http://shop.example.com/cart", (80,)),
        ("https://shop.example.com:8443/", (8443,)),
        ("http://127.0.0.1:8080", (8080,)),
    ],
)
def test_target_ports_come_from_the_base_url(url: str, ports: tuple[int, ...]) -> None:
    assert target_ports_for(url) == ports


def test_a_base_url_without_a_port_or_scheme_is_refused() -> None:
    with pytest.raises(BadInputError, match="not http"):
        target_ports_for("ftp://shop.invalid")
    with pytest.raises(BadInputError, match="invalid port"):
        target_ports_for("https://shop.invalid:99999")


def test_real_aws_gets_no_endpoints_and_no_skips() -> None:
    for provider in top(root_config(spec()), "provider"):
        assert set(provider.attributes) == {"alias", "region"}
        assert provider.blocks == ()


def test_an_endpoint_replaces_every_service_and_skips_account_checks() -> None:
    for provider in top(root_config(spec(endpoint="http://127.0.0.1:5000")), "provider"):
        endpoints = provider.block("endpoints").attributes
        assert endpoints == {service: "http://127.0.0.1:5000" for service in ENDPOINT_SERVICES}
        assert set(ENDPOINT_SERVICES) == {"ec2", "ssm", "sts", "iam", "pricing"}
        for flag in (
            "skip_credentials_validation",
            "skip_requesting_account_id",
            "skip_metadata_api_check",
            "skip_region_validation",
        ):
            assert provider.attributes[flag] is True


def test_every_provider_assumes_the_role_with_a_session_naming_the_run() -> None:
    role = AssumeRole(ROLE, external_id="spike-ext-7")
    config = root_config(spec(assume_role=role))
    for provider in top(config, "provider"):
        assert provider.block("assume_role").attributes == {
            "role_arn": ROLE,
            "external_id": "spike-ext-7",
            "session_name": "spike-viral-x10-20260101-120000-a1b2c3",
        }
    assert role_session_name(spec(assume_role=role)) == "spike-viral-x10-20260101-120000-a1b2c3"
    assert role_session_name(spec()) is None
    # a chosen session name is kept; no external id, no external_id line
    named = root_config(spec(assume_role=AssumeRole(ROLE, session_name="ops@night")))
    assert top(named, "provider")[0].block("assume_role").attributes == {
        "role_arn": ROLE,
        "session_name": "ops@night",
    }
    # run ids are up to 64 characters, session names too: cut, never ending in a hyphen
    long_id = "a" * 58 + "-b1c2d3"
    assert session_name_for(long_id) == ("spike-" + long_id)[:64].rstrip("-")
    assert len(session_name_for(long_id)) <= 64


def test_a_profile_per_region_goes_to_that_region_only() -> None:
    config = root_config(spec(region_profiles={"us-east-1": "loadtest-us"}))
    by_region = {p.attributes["region"]: p for p in top(config, "provider")}
    assert by_region["us-east-1"].attributes["profile"] == "loadtest-us"
    assert "profile" not in by_region["eu-west-2"].attributes


def test_no_credentials_anywhere_in_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIexampleSecretKey")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "exampleSessionToken")
    monkeypatch.setenv("AWS_PROFILE", "example-profile")
    text = render_root_config(spec(endpoint="http://127.0.0.1:5000"))
    for secret in (
        "AKIAEXAMPLEKEYID0000",
        "wJalrXUtnFEMIexampleSecretKey",
        "exampleSessionToken",
        "example-profile",
    ):
        assert secret not in text
    for key in ("access_key", "secret_key", "token", "profile", "shared_credentials", "assume_role"):
        assert key not in text
    # stable text: two renders of one spec are identical
    assert text == render_root_config(spec(endpoint="http://127.0.0.1:5000"))
    assert f'ssh_public_key      = "{PUBLIC_KEY}"' in text


def test_the_text_is_hcl_with_bare_references() -> None:
    text = render_root_config(spec(region_profiles={"eu-west-2": "lt"}, assume_role=AssumeRole(ROLE)))
    assert text.startswith("# spike run viral-x10-20260101-120000-a1b2c3: generated by")
    # references are expressions, not strings: Terraform binds the provider and reads the module
    assert "  providers = {\n    aws = aws.eu-west-2\n  }\n" in text
    assert (
        "  value = {\n    eu-west-2 = module.fleet_eu_west_2\n    us-east-1 = module.fleet_us_east_1\n  }\n"
        in text
    )
    assert 'provider "aws" {\n  alias   = "eu-west-2"\n  region  = "eu-west-2"\n  profile = "lt"\n' in text
    assert '  assume_role {\n    role_arn     = "arn:aws:iam::111122223333:role/spike-injectors"\n' in text
    assert text.count('provider "aws" {') == 2 and text.count("assume_role {") == 2
    assert "target_ports        = [443]" in text


def test_module_names_and_addresses_map_back_to_regions() -> None:
    assert module_name("ap-southeast-2") == "fleet_ap_southeast_2"
    assert region_of_address("module.fleet_ap_southeast_2.aws_instance.injector[3]") == "ap-southeast-2"
    assert region_of_address("module.fleet_eu_west_2.data.aws_ssm_parameter.ami") == "eu-west-2"
    assert region_of_address("aws_instance.elsewhere") == ALL_REGIONS


def test_the_shipped_module_is_where_the_config_points() -> None:
    module_dir = injector_fleet_module()
    assert module_dir.is_absolute()
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "user_data.sh.tftpl"):
        assert (module_dir / name).is_file()


def test_the_operator_address_is_normalised() -> None:
    assert operator_network("203.0.113.7") == "203.0.113.7/32"
    assert operator_network("198.51.100.9/24") == "198.51.100.0/24"
    assert operator_network("2001:db8::7") == "2001:db8::7/128"
    config = root_config(spec(operator_cidr="203.0.113.7"))
    assert module(config, "us-east-1").attributes["operator_cidr"] == "203.0.113.7/32"


# -- validation, before anything runs ------------------------------------------------------------------

EU = "eu-west-2"
VPC = "vpc-0123456789abcdef0"


def one(**options: object) -> dict[str, object]:
    return {"regions": (RegionFleet(EU, 1, **options),)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected", "fix"),
    [
        ({"operator_cidr": "0.0.0.0/0"}, "whole internet", "203.0.113.7/32"),
        ({"operator_cidr": "::/0"}, "whole internet", "203.0.113.7/32"),
        ({"operator_cidr": "10.0.0.0/0"}, "whole internet", "203.0.113.7/32"),
        ({"operator_cidr": "my-laptop"}, "not an IP network", "203.0.113.7/32"),
        ({"regions": (RegionFleet("mars-north-1", 1),)}, "unknown AWS region 'mars-north-1'", "eu-west-2"),
        ({"regions": (RegionFleet(EU, 0),)}, "0 instances is outside 1..100", "1 to 100"),
        ({"regions": (RegionFleet(EU, 101),)}, "101 instances", "1 to 100"),
        ({"regions": ()}, "no regions", "at least one"),
        ({"regions": (RegionFleet(EU, 1), RegionFleet(EU, 2))}, "listed twice", "once"),
        ({"regions": (RegionFleet(EU, 1, "large"),)}, "not an EC2 type name", "c6i.large"),
        ({"run_id": "Bad_Run"}, "cannot name AWS resources", "lowercase"),
        ({"ttl_minutes": 5}, "outside 10..1440", "10 to 1440"),
        ({"expires_at": "tomorrow"}, "not an RFC 3339 UTC time", "2026-11-26T14:05:00Z"),
        ({"expires_at": "2026-02-30T10:00:00Z"}, "not an RFC 3339 UTC time", "UTC"),
        ({"owner": "a" * 300}, "not a valid AWS tag value", "e-mail"),
        (
            {"ssh_public_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn..."},
            "not one OpenSSH public key",
            ".pub",
        ),
        ({"endpoint": "127.0.0.1:5000"}, "not an http(s) URL", "moto"),
        ({"module_source": Path("terraform/modules/injector-fleet")}, "not an absolute path", "absolute"),
        # what a real account needs
        ({"root_volume_size_gb": 4}, "root volume of 4 GiB is outside 8..500", "8 to 500"),
        ({"root_volume_size_gb": 20.5}, "outside 8..500", "whole number"),
        (
            one(vpc_id="my-vpc", subnet_id="subnet-0123456789abcdef0"),
            "vpc_id 'my-vpc' is not valid",
            "vpc-0123",
        ),
        (one(vpc_id=VPC, subnet_id="subnet-x"), "subnet_id 'subnet-x' is not valid", "subnet-0123"),
        (one(vpc_id=VPC), "a VPC and a subnet go together", "both"),
        (one(subnet_id="subnet-0123456789abcdef0"), "a VPC and a subnet go together", "neither"),
        (one(ami_id="ubuntu-22.04"), "ami_id 'ubuntu-22.04' is not valid", "ami-0123456789abcdef0"),
        (one(ami_ssm_parameter="aws/service/x"), "ami_ssm_parameter", "/aws/service/ami-amazon-linux-latest"),
        (one(ssh_user="Root User"), "ssh_user 'Root User' is not valid", "ec2-user"),
        (one(associate_public_ip="yes"), "associate_public_ip must be true or false", "true or false"),
        (one(associate_public_ip=False), "without public addresses need a subnet of your own", "subnet_id"),
        ({"target_ports": ()}, "no target port", "443"),
        ({"target_ports": (0,)}, "target port 0 is not a TCP port", "1 to 65535"),
        ({"target_ports": (70000,)}, "not a TCP port", "1 to 65535"),
        ({"target_cidrs": ()}, "no target network", "0.0.0.0/0"),
        (
            {"target_cidrs": ("shop.invalid",)},
            "target CIDR 'shop.invalid' is not an IP network",
            "198.51.100.0/24",
        ),
        (
            {
                "target_ports": tuple(range(8000, 8011)),
                "target_cidrs": tuple(f"198.51.100.{i}" for i in range(5)),
            },
            "11 target ports x 5 target CIDRs make 55 security group rules, more than 50",
            "fewer ports",
        ),
        ({"assume_role": AssumeRole("arn:aws:iam::1234:role/x")}, "not an IAM role ARN", "12-digit"),
        ({"assume_role": AssumeRole("arn:aws:iam::123456789012:user/x")}, "not an IAM role ARN", "role/"),
        ({"assume_role": AssumeRole(ROLE, session_name="a b")}, "role session name 'a b'", "2 to 64"),
        ({"assume_role": AssumeRole(ROLE, session_name="x")}, "role session name 'x'", "2 to 64"),
        ({"assume_role": AssumeRole(ROLE, external_id="a b")}, "external id is not valid", "trust policy"),
        ({"region_profiles": {"eu-west-1": "lt"}}, "profile is given for eu-west-1", "eu-west-2, us-east-1"),
        ({"region_profiles": {EU: "a profile"}}, "profile name 'a profile' is not valid", "AWS config"),
    ],
)
def test_bad_specs_are_refused_before_terraform_runs(
    tmp_path: Path, changes: dict[str, object], expected: str, fix: str
) -> None:
    # A terraform that cannot exist: had anything tried to run it, the error would be PreflightError.
    workspace = TerraformWorkspace(tmp_path / "tf", {}, terraform=str(tmp_path / "no-terraform"))
    with pytest.raises(BadInputError) as info:
        workspace.write_config(spec(**changes))
    assert expected in info.value.message
    assert info.value.fix is not None and fix in info.value.fix
    assert not (tmp_path / "tf").exists()  # nothing written either


def test_write_config_refuses_a_missing_module(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(tmp_path / "tf", {}, plugin_mirror=tmp_path)
    with pytest.raises(BadInputError, match="injector-fleet module is not at"):
        workspace.write_config(spec(module_source=tmp_path / "nowhere"))


# -- inventory ---------------------------------------------------------------------------------------------------


def fleet_output(ids: list[str], region: str) -> dict[str, object]:
    return {
        "region": region,
        "instance_ids": ids,
        "public_ips": [f"54.0.0.{i}" for i in range(len(ids))],
        "private_ips": [f"10.0.0.{i}" for i in range(len(ids))],
        "public_dns": [f"ec2-{i}.example" for i in range(len(ids))],
        "security_group_id": "sg-1",
        "key_name": f"spike-r-{region}",
        "ami_id": "ami-1",
    }


def test_inventory_from_terraform_output() -> None:
    text = json.dumps(
        {
            "fleets": {
                "sensitive": False,
                "type": ["object", {}],
                "value": {
                    "eu-west-2": {**fleet_output(["i-a", "i-b"], "eu-west-2"), "ssh_user": "ubuntu"},
                    "us-east-1": fleet_output(["i-c"], "us-east-1"),
                },
            }
        }
    )
    inventory = parse_inventory(text)
    assert [h.injector_id for h in inventory.hosts] == ["eu-west-2-1", "eu-west-2-2", "us-east-1-1"]
    second = inventory.hosts[1]
    assert (second.instance_id, second.public_ip, second.private_ip, second.public_dns) == (
        "i-b",
        "54.0.0.1",
        "10.0.0.1",
        "ec2-1.example",
    )
    assert second.address == "54.0.0.1"
    assert inventory.region("us-east-1").key_name == "spike-r-us-east-1"
    assert inventory.region("eu-west-2").ssh_user == "ubuntu"
    assert inventory.region("us-east-1").ssh_user == ""  # a state from before the ssh_user output


def test_inventory_says_clearly_what_is_missing() -> None:
    with pytest.raises(InfrastructureError, match=r"no 'fleets' output \(outputs present: none\)") as info:
        inventory_from_outputs({})
    assert info.value.fix is not None and "apply" in info.value.fix
    broken = fleet_output(["i-a"], "eu-west-2")
    del broken["public_ips"]
    with pytest.raises(InfrastructureError, match="eu-west-2: the fleet output lacks public_ips"):
        inventory_from_outputs({"fleets": {"value": {"eu-west-2": broken}}})
    uneven = fleet_output(["i-a", "i-b"], "eu-west-2")
    uneven["private_ips"] = ["10.0.0.1"]
    with pytest.raises(InfrastructureError, match="differ in length"):
        inventory_from_outputs({"fleets": {"value": {"eu-west-2": uneven}}})
    with pytest.raises(InfrastructureError, match="not JSON"):
        parse_inventory("Error: no state")
