"""The root Terraform configuration of one run's AWS fleet, written as HCL (`main.tf`).

Pure: a `FleetSpec` in, blocks (and their text) out, nothing read or written. Everything is
validated here, before Terraform or AWS see anything, and each refusal names the valid values.

The configuration has one `aws` provider per region (alias = the region code), one
`injector-fleet` module per region bound to it, and one root output, `fleets`, that maps every
region code to all of its module's outputs. Credentials never appear in it: the provider reads
them from the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) of the Terraform process. What
may appear is where to get them: a named profile per region, and a role to assume (its ARN, an
external id, a session name carrying the run id).

HCL rather than `main.tf.json`: checkov cannot scan a JSON root configuration (see `hcl.py`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from loadorch.cloud.names import EXTERNAL_ID, ROLE_ARN, SESSION_NAME
from loadorch.cloud.tags import run_tags
from loadorch.errors import BadInputError
from loadorch.providers.terraform.hcl import Block, Ref, Value, render

# Commercial AWS regions (the `aws` partition), as of 2025. GovCloud and China need other
# credentials and endpoints and are deliberately absent.
AWS_REGIONS: tuple[str, ...] = (
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)

AWS_PROVIDER_VERSION = ">= 5.0, < 6.0"
# Services the provider is pointed at when an endpoint (moto, LocalStack) replaces AWS.
ENDPOINT_SERVICES: tuple[str, ...] = ("ec2", "ssm", "sts", "iam", "pricing")
FLEETS_OUTPUT = "fleets"
MAX_INSTANCES_PER_REGION = 100
TTL_MINUTES_RANGE = (10, 1440)
ROOT_VOLUME_GB_RANGE = (8, 500)
DEFAULT_ROOT_VOLUME_GB = 20
DEFAULT_AMI_SSM_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEFAULT_SSH_USER = "ec2-user"
# A security group holds 60 rules per direction (per IP version); each target port x CIDR is one.
# 50 leaves room for the bootstrap's rules (80, 443, NTP).
MAX_TARGET_RULES = 50

_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_EXPIRES_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# AWS tag values: letters, digits, spaces and _ . : / = + - @, up to 256 characters.
_TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{1,256}$")
_SSH_PUBLIC_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\n]*)?$"
)
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
_SSM_PARAMETER = re.compile(r"^/[A-Za-z0-9_.\-/]{1,2047}$")
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# IAM: arn:aws:iam::<account>:role/<optional path/>name; role names are [\w+=,.@-]{1,64}.
_PROFILE = re.compile(r"^[\w+=,.@:/-]{1,128}$")


def injector_fleet_module() -> Path:
    """The `injector-fleet` module shipped with spike ($SPIKE_TERRAFORM_MODULE overrides it)."""
    default = Path(__file__).resolve().parents[3] / "terraform" / "modules" / "injector-fleet"
    return Path(os.environ.get("SPIKE_TERRAFORM_MODULE", str(default)))


@dataclass(frozen=True)
class RegionFleet:
    """The injectors of one region: how many, of which EC2 type, where and from which image.

    `vpc_id` and `subnet_id` go together (None: the region's default VPC and a default subnet);
    `ami_id` is a literal image (None: the image that `ami_ssm_parameter` names, Amazon Linux 2023
    by default); `associate_public_ip` gives each injector a public address, which spike needs to
    reach it over SSH from the operator's machine unless the subnet is reachable privately (VPN,
    peering, a bastion); `ssh_user` is the image's login user.
    """

    region: str
    instance_count: int
    instance_type: str = "c6i.large"
    use_spot: bool = False
    vpc_id: str | None = None
    subnet_id: str | None = None
    ami_id: str | None = None
    ami_ssm_parameter: str = DEFAULT_AMI_SSM_PARAMETER
    associate_public_ip: bool = True
    ssh_user: str = DEFAULT_SSH_USER


@dataclass(frozen=True)
class AssumeRole:
    """A role Terraform assumes in every region: the injectors live in the role's account.

    `session_name` None means `spike-<run id>` (see `session_name_for`), so CloudTrail in the
    load-test account shows which run did what.
    """

    role_arn: str
    external_id: str | None = None
    session_name: str | None = None


@dataclass(frozen=True)
class FleetSpec:
    """Everything Terraform needs to create one run's injector fleet across regions.

    `expires_at` is RFC 3339 UTC with whole seconds (the SpikeExpiresAt tag the reaper reads);
    `ttl_minutes` is when each injector powers itself off after boot; `endpoint` replaces every
    AWS endpoint (a moto server in tests), None means real AWS; `module_source` is the absolute
    path of terraform/modules/injector-fleet. The injectors may connect out to `target_ports`
    (TCP) on `target_cidrs`, plus what their bootstrap needs (see the module's README);
    `region_profiles` names an AWS profile per region (regions not named use the environment's
    credentials); `assume_role` is assumed on top of either.
    """

    run_id: str
    owner: str
    expires_at: str
    ttl_minutes: int
    regions: tuple[RegionFleet, ...]
    operator_cidr: str
    ssh_public_key: str
    module_source: Path
    endpoint: str | None = None
    root_volume_size_gb: int = DEFAULT_ROOT_VOLUME_GB
    target_ports: tuple[int, ...] = (443,)
    target_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    assume_role: AssumeRole | None = None
    region_profiles: Mapping[str, str] = field(default_factory=dict)


def module_name(region: str) -> str:
    """The root module block of `region`: eu-west-2 -> fleet_eu_west_2."""
    return "fleet_" + region.replace("-", "_")


def session_name_for(run_id: str) -> str:
    """The STS session name of a run: `spike-<run id>`, cut to STS's 64 characters."""
    return f"spike-{run_id}"[:64].rstrip("-")


def role_session_name(spec: FleetSpec) -> str | None:
    """The session name Terraform (and boto3, to see the same account) assumes the role with."""
    if spec.assume_role is None:
        return None
    return spec.assume_role.session_name or session_name_for(spec.run_id)


def target_ports_for(base_url: str) -> tuple[int, ...]:
    """The TCP port a target URL is reached on: its explicit port, else 443 (https) or 80 (http)."""
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError as exc:
        raise BadInputError(
            f"target URL {base_url!r} has an invalid port", where="base_url", fix="use a port from 1 to 65535"
        ) from exc
    if port is not None:
        return (port,)
    if parts.scheme in ("http", "https"):
        return (443,) if parts.scheme == "https" else (80,)
    raise BadInputError(
        f"target URL {base_url!r} is not http(s)",
        where="base_url",
        fix="give an http:// or https:// URL, e.g. https://shop.example.com",
    )


def operator_network(cidr: str) -> str:
    """The operator's network in canonical form (a bare address becomes /32 or /128).

    Refuses anything that is not an IP network and any /0, which would open SSH to everyone.
    """
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as exc:
        raise BadInputError(
            f"operator CIDR {cidr!r} is not an IP network",
            where="operator_cidr",
            fix="give your public address as a CIDR, e.g. 203.0.113.7/32 (or 2001:db8::7/128)",
        ) from exc
    if network.prefixlen == 0:
        raise BadInputError(
            f"operator CIDR {cidr!r} would open SSH on every injector to the whole internet",
            where="operator_cidr",
            fix="give your own public address, e.g. 203.0.113.7/32, or your office network's range",
        )
    return str(network)


def target_networks(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    """The target's networks in canonical form, each once, in the order given."""
    if not cidrs:
        raise BadInputError(
            "no target network is given: the injectors could reach nothing",
            where="target_cidrs",
            fix="give the target's addresses as CIDRs, or 0.0.0.0/0 (the default) for anywhere",
        )
    found: list[str] = []
    for cidr in cidrs:
        try:
            network = str(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise BadInputError(
                f"target CIDR {cidr!r} is not an IP network",
                where="target_cidrs",
                fix="give CIDRs such as 198.51.100.0/24 or 2001:db8::/32, or 0.0.0.0/0 for anywhere",
            ) from exc
        if network not in found:
            found.append(network)
    return tuple(found)


def validate_spec(spec: FleetSpec) -> None:
    """Raise BadInputError for anything AWS or the module would refuse, before any call is made."""
    if not _RUN_ID.match(spec.run_id):
        raise BadInputError(
            f"run id {spec.run_id!r} cannot name AWS resources",
            where="run_id",
            fix="use 2 to 64 lowercase letters, digits and hyphens (the planner's run ids are)",
        )
    if not _TAG_VALUE.match(spec.owner):
        raise BadInputError(
            f"owner {spec.owner!r} is not a valid AWS tag value",
            where="owner",
            fix="use 1 to 256 letters, digits, spaces or _ . : / = + - @ (e.g. an e-mail address)",
        )
    if not _EXPIRES_AT.match(spec.expires_at) or not _parses(spec.expires_at):
        raise BadInputError(
            f"expiry {spec.expires_at!r} is not an RFC 3339 UTC time",
            where="expires_at",
            fix="use whole seconds in UTC, e.g. 2026-11-26T14:05:00Z",
        )
    ttl_why = "the run's duration plus room to deploy and collect"
    _check_range("injector TTL", spec.ttl_minutes, TTL_MINUTES_RANGE, "minutes", "ttl_minutes", ttl_why)
    volume_why = "Gatling's simulation.log grows with the request count"
    _check_range(
        "root volume",
        spec.root_volume_size_gb,
        ROOT_VOLUME_GB_RANGE,
        "GiB",
        "root_volume_size_gb",
        volume_why,
    )
    if not spec.regions:
        raise BadInputError("the fleet has no regions", where="regions", fix="name at least one AWS region")
    seen: set[str] = set()
    for fleet in spec.regions:
        _validate_region(fleet)
        if fleet.region in seen:
            raise BadInputError(
                f"region {fleet.region} is listed twice",
                where="regions",
                fix="give each region once with its total instance count",
            )
        seen.add(fleet.region)
    operator_network(spec.operator_cidr)
    _validate_egress(spec)
    key = spec.ssh_public_key.strip()
    if "PRIVATE KEY" in key or not _SSH_PUBLIC_KEY.match(key):
        raise BadInputError(
            "the SSH key is not one OpenSSH public key line",
            where="ssh_public_key",
            fix="pass the contents of the .pub file (ssh-ed25519 AAAA... or ssh-rsa AAAA...); the private key never goes to Terraform",
        )
    if spec.endpoint is not None and not re.match(r"^https?://[^\s/]+", spec.endpoint):
        raise BadInputError(
            f"endpoint {spec.endpoint!r} is not an http(s) URL",
            where="endpoint",
            fix="give e.g. http://127.0.0.1:5000 for a moto server, or no endpoint for AWS itself",
        )
    if not spec.module_source.is_absolute():
        raise BadInputError(
            f"module source {spec.module_source} is not an absolute path",
            where="module_source",
            fix="pass injector_fleet_module() or another absolute path",
        )
    _validate_accounts(spec, seen)


def _check_range(what: str, value: int, bounds: tuple[int, int], unit: str, where: str, why: str) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInputError(
            f"{what} of {value!r} {unit} is outside {low}..{high}",
            where=where,
            fix=f"give a whole number of {low} to {high} {unit} ({why})",
        )


def _validate_region(fleet: RegionFleet) -> None:
    where = f"regions.{fleet.region}"
    if fleet.region not in AWS_REGIONS:
        raise BadInputError(
            f"unknown AWS region {fleet.region!r}",
            where="regions",
            fix=f"use one of: {', '.join(AWS_REGIONS)}",
        )
    if not 1 <= fleet.instance_count <= MAX_INSTANCES_PER_REGION:
        raise BadInputError(
            f"{fleet.region}: {fleet.instance_count} instances is outside 1..{MAX_INSTANCES_PER_REGION}",
            where=f"{where}.instance_count",
            fix=f"give 1 to {MAX_INSTANCES_PER_REGION} injectors per region, or drop the region",
        )
    if not _INSTANCE_TYPE.match(fleet.instance_type):
        raise BadInputError(
            f"{fleet.region}: instance type {fleet.instance_type!r} is not an EC2 type name",
            where=f"{where}.instance_type",
            fix="use family.size, e.g. c6i.large or t3.micro",
        )
    checks = (
        (
            "vpc_id",
            fleet.vpc_id,
            _VPC_ID,
            "a VPC id such as vpc-0123456789abcdef0, or none for the default VPC",
        ),
        ("subnet_id", fleet.subnet_id, _SUBNET_ID, "a subnet id such as subnet-0123456789abcdef0, or none"),
        (
            "ami_id",
            fleet.ami_id,
            _AMI_ID,
            "an AMI id such as ami-0123456789abcdef0, or none for the SSM parameter",
        ),
        (
            "ami_ssm_parameter",
            fleet.ami_ssm_parameter,
            _SSM_PARAMETER,
            f"an SSM path such as {DEFAULT_AMI_SSM_PARAMETER}",
        ),
        (
            "ssh_user",
            fleet.ssh_user,
            _SSH_USER,
            "the image's login user: ec2-user (Amazon Linux), ubuntu or admin (Debian)",
        ),
    )
    for name, value, pattern, valid in checks:
        if value is not None and not (isinstance(value, str) and pattern.match(value)):
            raise BadInputError(
                f"{fleet.region}: {name} {value!r} is not valid", where=f"{where}.{name}", fix=f"give {valid}"
            )
    if (fleet.vpc_id is None) != (fleet.subnet_id is None):
        raise BadInputError(
            f"{fleet.region}: a VPC and a subnet go together (vpc_id {fleet.vpc_id}, subnet_id {fleet.subnet_id})",
            where=where,
            fix="give both (the subnet must be in the VPC) or neither (the region's default VPC)",
        )
    for name in ("use_spot", "associate_public_ip"):
        if not isinstance(getattr(fleet, name), bool):
            raise BadInputError(
                f"{fleet.region}: {name} must be true or false",
                where=f"{where}.{name}",
                fix="give true or false",
            )
    if not fleet.associate_public_ip and fleet.subnet_id is None:
        # The provider only sends the setting with a subnet, and default subnets map public IPs.
        raise BadInputError(
            f"{fleet.region}: injectors without public addresses need a subnet of your own",
            where=f"{where}.associate_public_ip",
            fix="give vpc_id and subnet_id of a subnet spike can reach privately (VPN, peering), or keep public addresses",
        )


def _validate_egress(spec: FleetSpec) -> None:
    if not spec.target_ports:
        raise BadInputError(
            "no target port is given: the injectors could not reach the target",
            where="target_ports",
            fix="give the target's TCP ports, e.g. 443 (https) or 80 (http); target_ports_for(base_url) derives them",
        )
    for port in spec.target_ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise BadInputError(
                f"target port {port!r} is not a TCP port",
                where="target_ports",
                fix="give ports from 1 to 65535",
            )
    rules = len(set(spec.target_ports)) * len(target_networks(spec.target_cidrs))
    if rules > MAX_TARGET_RULES:
        raise BadInputError(
            f"{len(set(spec.target_ports))} target ports x {len(target_networks(spec.target_cidrs))} target CIDRs"
            f" make {rules} security group rules, more than {MAX_TARGET_RULES}",
            where="target_cidrs",
            fix="give fewer ports or merge the target's addresses into wider CIDRs (a security group holds 60 rules)",
        )


def _validate_accounts(spec: FleetSpec, regions: set[str]) -> None:
    role = spec.assume_role
    if role is not None:
        if not ROLE_ARN.match(role.role_arn):
            raise BadInputError(
                f"role ARN {role.role_arn!r} is not an IAM role ARN",
                where="assume_role.role_arn",
                fix="give arn:aws:iam::<12-digit account id>:role/<name>, e.g. arn:aws:iam::123456789012:role/spike-injectors",
            )
        if role.external_id is not None and not EXTERNAL_ID.match(role.external_id):
            raise BadInputError(
                "the role's external id is not valid",
                where="assume_role.external_id",
                fix="give 2 to 1224 letters, digits or + = , . @ : / - (what the role's trust policy expects)",
            )
        name = role_session_name(spec) or ""
        if not SESSION_NAME.match(name):
            raise BadInputError(
                f"role session name {name!r} is not valid",
                where="assume_role.session_name",
                fix="give 2 to 64 letters, digits or + = , . @ _ - (or none: spike-<run id>)",
            )
    for region, profile in spec.region_profiles.items():
        if region not in regions:
            raise BadInputError(
                f"an AWS profile is given for {region}, which this run does not use",
                where="region_profiles",
                fix=f"name profiles for this run's regions only: {', '.join(sorted(regions))}",
            )
        if not isinstance(profile, str) or not _PROFILE.match(profile):
            raise BadInputError(
                f"{region}: AWS profile name {profile!r} is not valid",
                where=f"region_profiles.{region}",
                fix="give the name of a profile in your AWS config file (letters, digits, + = , . @ : / _ -)",
            )


def _parses(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def provider_block(fleet: RegionFleet, spec: FleetSpec) -> Block:
    """The `aws` provider of one region; with an endpoint every AWS call goes there instead."""
    attributes: dict[str, Value] = {"alias": fleet.region, "region": fleet.region}
    if fleet.region in spec.region_profiles:
        attributes["profile"] = spec.region_profiles[fleet.region]
    blocks: list[Block] = []
    if spec.endpoint is not None:
        # An emulator has no real account, instance metadata or region list to check against.
        for flag in (
            "skip_credentials_validation",
            "skip_metadata_api_check",
            "skip_region_validation",
            "skip_requesting_account_id",
        ):
            attributes[flag] = True
        blocks.append(Block("endpoints", attributes={s: spec.endpoint for s in ENDPOINT_SERVICES}))
    if spec.assume_role is not None:
        role: dict[str, Value] = {"role_arn": spec.assume_role.role_arn}
        if spec.assume_role.external_id is not None:
            role["external_id"] = spec.assume_role.external_id
        role["session_name"] = role_session_name(spec)
        blocks.append(Block("assume_role", attributes=role))
    return Block("provider", ("aws",), attributes, tuple(blocks))


def module_block(spec: FleetSpec, fleet: RegionFleet) -> Block:
    """One region's `injector-fleet` module, bound to that region's provider."""
    attributes: dict[str, Value] = {
        "source": str(spec.module_source),
        "providers": {"aws": Ref(f"aws.{fleet.region}")},
        "region_label": fleet.region,
        "run_id": spec.run_id,
        "instance_count": fleet.instance_count,
        "instance_type": fleet.instance_type,
        "use_spot": fleet.use_spot,
        "ttl_minutes": spec.ttl_minutes,
        "operator_cidr": operator_network(spec.operator_cidr),
        "ssh_public_key": spec.ssh_public_key.strip(),
        "ssh_user": fleet.ssh_user,
        "associate_public_ip": fleet.associate_public_ip,
        "root_volume_size_gb": spec.root_volume_size_gb,
        "target_ports": sorted(set(spec.target_ports)),
        "target_cidrs": list(target_networks(spec.target_cidrs)),
    }
    if fleet.ami_id is not None:
        attributes["ami_id"] = fleet.ami_id
    else:
        attributes["ami_ssm_parameter"] = fleet.ami_ssm_parameter
    if fleet.vpc_id is not None:
        attributes["vpc_id"] = fleet.vpc_id
        attributes["subnet_id"] = fleet.subnet_id
    attributes["tags"] = dict(run_tags(spec.run_id, spec.owner, spec.expires_at, fleet.region))
    return Block("module", (module_name(fleet.region),), attributes)


def root_config(spec: FleetSpec) -> tuple[Block, ...]:
    """The root configuration of `spec` (validated first): terraform, providers, modules, output."""
    validate_spec(spec)
    settings = Block(
        "terraform",
        attributes={"required_version": ">= 1.9.0"},
        blocks=(
            Block(
                "required_providers",
                attributes={"aws": {"source": "hashicorp/aws", "version": AWS_PROVIDER_VERSION}},
            ),
        ),
    )
    fleets: dict[str, Value] = {f.region: Ref(f"module.{module_name(f.region)}") for f in spec.regions}
    output = Block(
        "output",
        (FLEETS_OUTPUT,),
        {"description": "Every region's injector-fleet outputs, by region code.", "value": fleets},
    )
    return (
        settings,
        *(provider_block(f, spec) for f in spec.regions),
        *(module_block(spec, f) for f in spec.regions),
        output,
    )


def render_root_config(spec: FleetSpec) -> str:
    """`main.tf` text: the same spec always gives the same text, so diffs between runs stay readable."""
    header = f"# spike run {spec.run_id}: generated by loadorch.providers.terraform.config; do not edit.\n\n"
    return header + render(root_config(spec))
