"""The `aws` provider's Terraform side without Terraform: the root configuration, validation, the
`-json` UI parser, the built commands, the inventory, and interruption against a fake `terraform`."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from loadorch.cloud.tags import run_tags
from loadorch.errors import BadInputError, InfrastructureError, RunInterrupted
from loadorch.process import Command
from loadorch.providers.terraform.config import (
    ENDPOINT_SERVICES,
    FleetSpec,
    RegionFleet,
    injector_fleet_module,
    module_name,
    operator_network,
    render_root_config,
    root_config,
)
from loadorch.providers.terraform.inventory import inventory_from_outputs, parse_inventory
from loadorch.providers.terraform.runner import (
    ALL_REGIONS,
    TerraformApplyError,
    TerraformWorkspace,
    UiStream,
    cli_config_text,
    process_env,
    region_of_address,
)

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFa spike-run"


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


# -- the root configuration ------------------------------------------------------------------------


def test_one_aliased_provider_and_one_module_per_region() -> None:
    config = root_config(spec())
    providers = config["provider"]["aws"]
    assert [(p["alias"], p["region"]) for p in providers] == [
        ("eu-west-2", "eu-west-2"),
        ("us-east-1", "us-east-1"),
    ]
    assert set(config["module"]) == {"fleet_eu_west_2", "fleet_us_east_1"}
    eu = config["module"]["fleet_eu_west_2"]
    assert eu["providers"] == {"aws": "aws.eu-west-2"}
    assert eu["source"] == "/opt/spike/terraform/modules/injector-fleet"
    assert (eu["region_label"], eu["instance_count"], eu["instance_type"], eu["use_spot"]) == (
        "eu-west-2",
        2,
        "t3.micro",
        False,
    )
    assert config["module"]["fleet_us_east_1"]["use_spot"] is True
    assert eu["tags"] == run_tags(
        "viral-x10-20260101-120000-a1b2c3", "sre@example.com", "2026-01-01T14:00:00Z", "eu-west-2"
    )
    assert config["module"]["fleet_us_east_1"]["tags"]["SpikeRegion"] == "us-east-1"
    assert config["terraform"]["required_providers"]["aws"]["source"] == "hashicorp/aws"
    # one root output exposes every region's module outputs
    assert config["output"]["fleets"]["value"] == {
        "eu-west-2": "${module.fleet_eu_west_2}",
        "us-east-1": "${module.fleet_us_east_1}",
    }


def test_real_aws_gets_no_endpoints_and_no_skips() -> None:
    for provider in root_config(spec())["provider"]["aws"]:
        assert set(provider) == {"alias", "region"}


def test_an_endpoint_replaces_every_service_and_skips_account_checks() -> None:
    for provider in root_config(spec(endpoint="http://127.0.0.1:5000"))["provider"]["aws"]:
        assert provider["endpoints"] == {service: "http://127.0.0.1:5000" for service in ENDPOINT_SERVICES}
        assert set(ENDPOINT_SERVICES) == {"ec2", "ssm", "sts", "iam", "pricing"}
        for flag in (
            "skip_credentials_validation",
            "skip_requesting_account_id",
            "skip_metadata_api_check",
            "skip_region_validation",
        ):
            assert provider[flag] is True


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
    # stable text: sorted keys, so two renders of one spec are identical
    assert text == render_root_config(spec(endpoint="http://127.0.0.1:5000"))
    assert json.loads(text)["module"]["fleet_eu_west_2"]["ssh_public_key"] == PUBLIC_KEY


def test_module_names_and_addresses_map_back_to_regions() -> None:
    assert module_name("ap-southeast-2") == "fleet_ap_southeast_2"
    assert region_of_address("module.fleet_ap_southeast_2.aws_instance.injector[3]") == "ap-southeast-2"
    assert region_of_address("module.fleet_eu_west_2.data.aws_ssm_parameter.ami") == "eu-west-2"
    assert region_of_address("aws_instance.elsewhere") == ALL_REGIONS


def test_the_shipped_module_is_where_the_config_points() -> None:
    module = injector_fleet_module()
    assert module.is_absolute()
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "user_data.sh.tftpl"):
        assert (module / name).is_file()


def test_the_operator_address_is_normalised() -> None:
    assert operator_network("203.0.113.7") == "203.0.113.7/32"
    assert operator_network("198.51.100.9/24") == "198.51.100.0/24"
    assert operator_network("2001:db8::7") == "2001:db8::7/128"
    assert root_config(spec(operator_cidr="203.0.113.7"))["module"]["fleet_us_east_1"]["operator_cidr"] == (
        "203.0.113.7/32"
    )


# -- validation, before anything runs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected", "fix"),
    [
        ({"operator_cidr": "0.0.0.0/0"}, "whole internet", "203.0.113.7/32"),
        ({"operator_cidr": "::/0"}, "whole internet", "203.0.113.7/32"),
        ({"operator_cidr": "10.0.0.0/0"}, "whole internet", "203.0.113.7/32"),
        ({"operator_cidr": "my-laptop"}, "not an IP network", "203.0.113.7/32"),
        ({"regions": (RegionFleet("mars-north-1", 1),)}, "unknown AWS region 'mars-north-1'", "eu-west-2"),
        ({"regions": (RegionFleet("eu-west-2", 0),)}, "0 instances is outside 1..100", "1 to 100"),
        ({"regions": (RegionFleet("eu-west-2", 101),)}, "101 instances", "1 to 100"),
        ({"regions": ()}, "no regions", "at least one"),
        ({"regions": (RegionFleet("eu-west-2", 1), RegionFleet("eu-west-2", 2))}, "listed twice", "once"),
        ({"regions": (RegionFleet("eu-west-2", 1, "large"),)}, "not an EC2 type name", "c6i.large"),
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


# -- commands and files ----------------------------------------------------------------------------------


def test_commands_are_values_with_automation_settings(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(tmp_path, {"AWS_PROFILE": "ops"}, plugin_mirror=Path("/opt/tf-plugins"))
    assert workspace.init_command().argv == ("terraform", "init", "-input=false", "-no-color")
    apply = workspace.apply_command()
    assert apply.argv[:5] == ("terraform", "apply", "-auto-approve", "-input=false", "-json")
    assert workspace.destroy_command().argv[:5] == (
        "terraform",
        "destroy",
        "-auto-approve",
        "-input=false",
        "-json",
    )
    assert workspace.output_command().argv == ("terraform", "output", "-json", "-no-color")
    assert apply.cwd == tmp_path.resolve()
    assert apply.env["TF_IN_AUTOMATION"] == "1"
    assert apply.env["TF_INPUT"] == "0"
    assert apply.env["CHECKPOINT_DISABLE"] == "1"
    assert apply.env["TF_CLI_CONFIG_FILE"] == str(tmp_path.resolve() / "terraform.rc")
    assert apply.env["AWS_PROFILE"] == "ops"  # credentials travel in the environment only


def test_terraform_never_inherits_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_LOG", "trace")
    monkeypatch.setenv("TF_LOG_PATH", "/tmp/tf.log")
    monkeypatch.setenv("TF_WORKSPACE", "other")
    env = process_env(Command(("terraform",), env={"TF_LOG_PROVIDER": "debug", "TF_INPUT": "0"}))
    assert not [key for key in env if key.startswith("TF_LOG") or key == "TF_WORKSPACE"]
    assert env["TF_INPUT"] == "0"


def test_cli_config_installs_hashicorp_providers_from_the_mirror() -> None:
    text = cli_config_text(Path("/opt/tf-plugins"), Path("/var/cache/tf"))
    assert 'path    = "/opt/tf-plugins"' in text
    assert 'include = ["registry.terraform.io/hashicorp/*"]' in text
    assert 'plugin_cache_dir = "/var/cache/tf"' in text
    assert "provider_installation" not in cli_config_text(None, None)


def test_write_config_writes_the_config_and_cli_config(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(
        tmp_path / "tf", {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}, plugin_mirror=Path("/m")
    )
    path = workspace.write_config(spec(module_source=injector_fleet_module()))
    assert json.loads(path.read_text())["module"]["fleet_eu_west_2"]["instance_count"] == 2
    assert "/m" in (tmp_path / "tf" / "terraform.rc").read_text()
    for written in (tmp_path / "tf").iterdir():
        assert "s3cr3t" not in written.read_text()


# -- the -json UI stream -----------------------------------------------------------------------------------

# Recorded from `terraform apply -json` (Terraform 1.11, hashicorp/aws 5.100) against moto, trimmed:
# one region creates its resources, the other fails to import its key pair.
RECORDED_APPLY = r"""{"@level":"info","@message":"Terraform 1.11.4","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:50.100000Z","terraform":"1.11.4","type":"version","ui":"1.2"}
{"@level":"info","@message":"module.fleet_eu_west_2.data.aws_ssm_parameter.ami: Refreshing...","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:58.926000Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.data.aws_ssm_parameter.ami","module":"module.fleet_eu_west_2","resource":"data.aws_ssm_parameter.ami","implied_provider":"aws","resource_type":"aws_ssm_parameter","resource_name":"ami","resource_key":null},"action":"read"},"type":"apply_start"}
{"@level":"info","@message":"module.fleet_us_east_1.aws_key_pair.injector: Plan to create","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:59.563000Z","change":{"resource":{"addr":"module.fleet_us_east_1.aws_key_pair.injector","module":"module.fleet_us_east_1","resource":"aws_key_pair.injector","implied_provider":"aws","resource_type":"aws_key_pair","resource_name":"injector","resource_key":null},"action":"create"},"type":"planned_change"}
{"@level":"info","@message":"Plan: 7 to add, 0 to change, 0 to destroy.","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:59.563500Z","changes":{"add":7,"change":0,"import":0,"remove":0,"operation":"plan"},"type":"change_summary"}
{"@level":"info","@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Creating...","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:00.471909Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]","module":"module.fleet_eu_west_2","resource":"aws_instance.injector[0]","implied_provider":"aws","resource_type":"aws_instance","resource_name":"injector","resource_key":0},"action":"create"},"type":"apply_start"}
{"@level":"info","@message":"module.fleet_us_east_1.aws_key_pair.injector: Creation errored after 0s","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:00.335650Z","hook":{"resource":{"addr":"module.fleet_us_east_1.aws_key_pair.injector","module":"module.fleet_us_east_1","resource":"aws_key_pair.injector","implied_provider":"aws","resource_type":"aws_key_pair","resource_name":"injector","resource_key":null},"action":"create","elapsed_seconds":0},"type":"apply_errored"}
{"@level":"info","@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Still creating... [10s elapsed]","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.470000Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]","module":"module.fleet_eu_west_2","resource":"aws_instance.injector[0]","implied_provider":"aws","resource_type":"aws_instance","resource_name":"injector","resource_key":0},"action":"create","elapsed_seconds":10},"type":"apply_progress"}
{"@level":"info","@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Creation complete after 11s [id=i-d3a851af943421418]","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.598088Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]","module":"module.fleet_eu_west_2","resource":"aws_instance.injector[0]","implied_provider":"aws","resource_type":"aws_instance","resource_name":"injector","resource_key":0},"action":"create","id_key":"id","id_value":"i-d3a851af943421418","elapsed_seconds":11},"type":"apply_complete"}
{"@level":"info","@message":"\nInterrupt received.\nPlease wait for Terraform to exit or data loss may occur.\nGracefully shutting down...\n","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.600000Z","type":"log"}
{"@level":"error","@message":"Error: importing EC2 Key Pair (spike-r1-us-east-1): operation error EC2: ImportKeyPair, https response error StatusCode: 400, api error InvalidKeyPair.Duplicate: The keypair 'spike-r1-us-east-1' already exists.","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.611245Z","diagnostic":{"severity":"error","summary":"importing EC2 Key Pair (spike-r1-us-east-1): operation error EC2: ImportKeyPair, https response error StatusCode: 400, api error InvalidKeyPair.Duplicate: The keypair 'spike-r1-us-east-1' already exists.","detail":"","address":"module.fleet_us_east_1.aws_key_pair.injector","range":{"filename":".terraform/modules/fleet_us_east_1/main.tf","start":{"line":24,"column":36,"byte":854},"end":{"line":24,"column":37,"byte":855}}},"type":"diagnostic"}
{"@level":"warn","@message":"Warning: Argument is deprecated","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.611300Z","diagnostic":{"severity":"warning","summary":"Argument is deprecated","detail":"use something else","range":{"filename":".terraform/modules/fleet_eu_west_2/main.tf","start":{"line":1,"column":1,"byte":0},"end":{"line":1,"column":2,"byte":1}}},"type":"diagnostic"}
panic: something only printed as text
"""


def test_ui_stream_reports_each_line_with_its_region() -> None:
    stream = UiStream()
    events = [e for e in map(stream.feed, RECORDED_APPLY.splitlines()) if e is not None]
    triples = [(e.region, e.event, e.detail) for e in events]
    assert triples[0] == (ALL_REGIONS, "version", "Terraform 1.11.4")
    assert ("eu-west-2", "apply_start", "data.aws_ssm_parameter.ami: Refreshing...") in triples
    assert ("us-east-1", "planned_change", "aws_key_pair.injector: Plan to create") in triples
    assert (ALL_REGIONS, "change_summary", "Plan: 7 to add, 0 to change, 0 to destroy.") in triples
    assert (
        "eu-west-2",
        "apply_progress",
        "aws_instance.injector[0]: Still creating... [10s elapsed]",
    ) in triples
    assert (
        "eu-west-2",
        "apply_complete",
        "aws_instance.injector[0]: Creation complete after 11s [id=i-d3a851af943421418]",
    ) in triples
    assert ("us-east-1", "apply_errored", "aws_key_pair.injector: Creation errored after 0s") in triples
    # multi-line messages become one line; plain text is kept as a log event
    assert (
        ALL_REGIONS,
        "log",
        "Interrupt received. Please wait for Terraform to exit or data loss may occur. Gracefully shutting down...",
    ) in triples
    assert triples[-1] == (ALL_REGIONS, "log", "panic: something only printed as text")
    # diagnostics: the error is kept with its region, the warning is reported but not kept
    diagnostics = [t for t in triples if t[1] == "diagnostic"]
    assert diagnostics[0][0] == "us-east-1" and "InvalidKeyPair.Duplicate" in diagnostics[0][2]
    assert diagnostics[1] == (
        "eu-west-2",
        "diagnostic",
        "warning: Argument is deprecated: use something else",
    )
    assert [d.region for d in stream.diagnostics] == ["us-east-1"]
    assert stream.failed_regions() == ["us-east-1"]
    assert stream.summary == "Plan: 7 to add, 0 to change, 0 to destroy."
    hook = next(e for e in events if e.event == "apply_start" and "aws_instance" in e.detail)
    assert (hook.address, hook.action) == ("module.fleet_eu_west_2.aws_instance.injector[0]", "create")


def test_ui_stream_finds_the_region_of_a_diagnostic_without_address() -> None:
    stream = UiStream()
    line = json.dumps(
        {
            "type": "diagnostic",
            "@message": "Error: Invalid value for variable",
            "diagnostic": {
                "severity": "error",
                "summary": "Invalid value for variable",
                "detail": "operator_cidr must not open SSH to the whole internet",
                "range": {"filename": ".terraform/modules/fleet_ap_south_1/variables.tf"},
            },
        }
    )
    event = stream.feed(line)
    assert event is not None and event.region == "ap-south-1"
    assert stream.failed_regions() == ["ap-south-1"]
    assert stream.feed("   ") is None


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
                    "eu-west-2": fleet_output(["i-a", "i-b"], "eu-west-2"),
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
mode = os.environ.get("FAKE_TF_MODE", "ok")
if mode == "wait":
    time.sleep(60)
sys.exit(1 if mode == "fail" else 0)
"""

CREATE_START = json.dumps(
    {
        "type": "apply_start",
        "@message": "module.fleet_eu_west_2.aws_instance.injector[0]: Creating...",
        "hook": {"resource": {"addr": "module.fleet_eu_west_2.aws_instance.injector[0]"}, "action": "create"},
    }
)


def fake_workspace(tmp_path: Path, lines: list[str], mode: str, **options: float) -> TerraformWorkspace:
    fake = tmp_path / "terraform"
    fake.write_text(FAKE_TERRAFORM.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "lines.jsonl").write_text("".join(line + "\n" for line in lines))
    env = {
        "FAKE_TF_LINES": str(tmp_path / "lines.jsonl"),
        "FAKE_TF_RECORD": str(tmp_path / "record.txt"),
        "FAKE_TF_MODE": mode,
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
        "apply_start",
    ]
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


def test_a_missing_terraform_is_a_preflight_error(tmp_path: Path) -> None:
    workspace = TerraformWorkspace(tmp_path, {}, terraform=str(tmp_path / "absent"), plugin_mirror=tmp_path)
    with pytest.raises(BadInputError, match="not found") as info:
        workspace.init()
    assert info.value.fix is not None and "spike doctor" in info.value.fix
