"""The root Terraform configuration of one run's AWS fleet, as a JSON-able dict (`main.tf.json`).

Pure: a `FleetSpec` in, a dict out, nothing read or written. Everything is validated here, before
Terraform or AWS see anything, and each refusal names the valid values.

The configuration has one `aws` provider per region (alias = the region code), one
`injector-fleet` module per region bound to it, and one root output, `fleets`, that maps every
region code to all of its module's outputs. Credentials never appear in it: the provider reads
them from the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) of the Terraform process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loadorch.cloud.tags import run_tags
from loadorch.errors import BadInputError

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

_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_EXPIRES_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# AWS tag values: letters, digits, spaces and _ . : / = + - @, up to 256 characters.
_TAG_VALUE = re.compile(r"^[\w .:/=+\-@]{1,256}$")
_SSH_PUBLIC_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\n]*)?$"
)


def injector_fleet_module() -> Path:
    """The `injector-fleet` module shipped with spike ($SPIKE_TERRAFORM_MODULE overrides it)."""
    default = Path(__file__).resolve().parents[3] / "terraform" / "modules" / "injector-fleet"
    return Path(os.environ.get("SPIKE_TERRAFORM_MODULE", str(default)))


@dataclass(frozen=True)
class RegionFleet:
    """The injectors of one region: how many, of which EC2 type, on spot or on demand."""

    region: str
    instance_count: int
    instance_type: str = "c6i.large"
    use_spot: bool = False


@dataclass(frozen=True)
class FleetSpec:
    """Everything Terraform needs to create one run's injector fleet across regions.

    `expires_at` is RFC 3339 UTC with whole seconds (the SpikeExpiresAt tag the reaper reads);
    `ttl_minutes` is when each injector powers itself off after boot; `endpoint` replaces every
    AWS endpoint (a moto server in tests), None means real AWS; `module_source` is the absolute
    path of terraform/modules/injector-fleet.
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


def module_name(region: str) -> str:
    """The root module block of `region`: eu-west-2 -> fleet_eu_west_2."""
    return "fleet_" + region.replace("-", "_")


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
    low, high = TTL_MINUTES_RANGE
    if not low <= spec.ttl_minutes <= high:
        raise BadInputError(
            f"injector TTL of {spec.ttl_minutes} minutes is outside {low}..{high}",
            where="ttl_minutes",
            fix=f"give {low} to {high} minutes: the run's duration plus room to deploy and collect",
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


def _validate_region(fleet: RegionFleet) -> None:
    if fleet.region not in AWS_REGIONS:
        raise BadInputError(
            f"unknown AWS region {fleet.region!r}",
            where="regions",
            fix=f"use one of: {', '.join(AWS_REGIONS)}",
        )
    if not 1 <= fleet.instance_count <= MAX_INSTANCES_PER_REGION:
        raise BadInputError(
            f"{fleet.region}: {fleet.instance_count} instances is outside 1..{MAX_INSTANCES_PER_REGION}",
            where=f"regions.{fleet.region}.instance_count",
            fix=f"give 1 to {MAX_INSTANCES_PER_REGION} injectors per region, or drop the region",
        )
    if not _INSTANCE_TYPE.match(fleet.instance_type):
        raise BadInputError(
            f"{fleet.region}: instance type {fleet.instance_type!r} is not an EC2 type name",
            where=f"regions.{fleet.region}.instance_type",
            fix="use family.size, e.g. c6i.large or t3.micro",
        )


def _parses(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def provider_block(region: str, endpoint: str | None) -> dict[str, Any]:
    """The `aws` provider of one region; with an endpoint every AWS call goes there instead."""
    block: dict[str, Any] = {"alias": region, "region": region}
    if endpoint is not None:
        block["endpoints"] = {service: endpoint for service in ENDPOINT_SERVICES}
        # An emulator has no real account, instance metadata or region list to check against.
        block["skip_credentials_validation"] = True
        block["skip_requesting_account_id"] = True
        block["skip_metadata_api_check"] = True
        block["skip_region_validation"] = True
    return block


def module_block(spec: FleetSpec, fleet: RegionFleet) -> dict[str, Any]:
    """One region's `injector-fleet` module, bound to that region's provider."""
    return {
        "source": str(spec.module_source),
        "providers": {"aws": f"aws.{fleet.region}"},
        "region_label": fleet.region,
        "run_id": spec.run_id,
        "instance_count": fleet.instance_count,
        "instance_type": fleet.instance_type,
        "use_spot": fleet.use_spot,
        "ttl_minutes": spec.ttl_minutes,
        "operator_cidr": operator_network(spec.operator_cidr),
        "ssh_public_key": spec.ssh_public_key.strip(),
        "tags": run_tags(spec.run_id, spec.owner, spec.expires_at, fleet.region),
    }


def root_config(spec: FleetSpec) -> dict[str, Any]:
    """The root configuration of `spec` (validated first) as a dict for `main.tf.json`."""
    validate_spec(spec)
    return {
        "terraform": {
            "required_version": ">= 1.9.0",
            "required_providers": {"aws": {"source": "hashicorp/aws", "version": AWS_PROVIDER_VERSION}},
        },
        "provider": {"aws": [provider_block(f.region, spec.endpoint) for f in spec.regions]},
        "module": {module_name(f.region): module_block(spec, f) for f in spec.regions},
        "output": {
            FLEETS_OUTPUT: {
                "description": "Every region's injector-fleet outputs, by region code.",
                "value": {f.region: f"${{module.{module_name(f.region)}}}" for f in spec.regions},
            }
        },
    }


def render_root_config(spec: FleetSpec) -> str:
    """`main.tf.json` text: sorted keys and indentation, so that diffs between runs stay readable."""
    return json.dumps(root_config(spec), indent=2, sort_keys=True) + "\n"
