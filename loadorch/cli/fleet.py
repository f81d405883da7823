"""Options that choose and configure the provider, shared by `spike run` and `spike plan`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loadorch.cli.common import exit_with
from loadorch.errors import BadInputError, SpikeError
from loadorch.paths import build_cache_dir
from loadorch.profiles.model import check_base_url
from loadorch.providers.base import Provider
from loadorch.providers.local import LocalProvider

if TYPE_CHECKING:  # the aws provider pulls in boto3 and Terraform glue, imported only when used
    from loadorch.cloud.aws import AwsAccount
    from loadorch.providers.aws import AwsProvider, AwsSettings, Progress

PROVIDERS = ("local", "static", "aws")

ProviderOption = Annotated[
    str,
    typer.Option(
        help="Where injectors run: local (processes here), static (SSH hosts from --hosts), "
        "aws (EC2 instances created with Terraform and destroyed after the run)."
    ),
]
HostsOption = Annotated[
    Path | None,
    typer.Option(help="static: the inventory of SSH hosts (host, port, user, key, region, host_key)."),
]


def check_provider(value: str) -> str:
    if value not in PROVIDERS:
        raise typer.BadParameter(f"unknown provider {value!r}; valid values: {', '.join(PROVIDERS)}")
    return value


def static_provider(hosts: Path | None) -> Provider:
    from loadorch.providers.static import StaticProvider

    if hosts is None:
        raise BadInputError(
            "--provider static needs an inventory of SSH hosts",
            fix="add --hosts FILE (see the inventory example in the README)",
        )
    return StaticProvider(hosts, cache_dir=build_cache_dir())


def local_provider() -> Provider:
    return LocalProvider()


InstanceTypeOption = Annotated[
    str,
    typer.Option(
        help="aws: the EC2 instance type of the injectors; another per region after it, e.g. "
        "c6i.large,ap-southeast-1=c7g.large (Graviton types get the arm64 image)."
    ),
]
SubnetOption = Annotated[
    str | None,
    typer.Option(
        help="aws: a subnet per region, e.g. eu-west-2=subnet-0abc,us-east-1=subnet-0def (default: a default subnet)."
    ),
]
VpcOption = Annotated[
    str | None,
    typer.Option(help="aws: the VPC of each region's subnet, e.g. eu-west-2=vpc-0abc (with --subnet)."),
]
AmiOption = Annotated[
    str | None, typer.Option(help="aws: an AMI id for every injector (default: Amazon Linux 2023).")
]
SshUserOption = Annotated[str, typer.Option(help="aws: the image's login user.")]
PublicIpOption = Annotated[
    bool,
    typer.Option(
        "--public-ip/--no-public-ip",
        help="aws: give injectors public addresses (spike SSHes from this machine); --no-public-ip when "
        "the subnets are reached privately (VPN, peering), which needs --subnet.",
    ),
]


def parse_region_values(
    option: str, text: str | None, pattern: str, example: str
) -> tuple[tuple[str, str], ...]:
    """`eu-west-2=a,us-east-1=b` -> ((region, value), ...); refusals name the option and the bad item."""
    import re

    if not text:
        return ()
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        region, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not region or not re.fullmatch(pattern, value):
            raise BadInputError(
                f"{option} item {item!r} is not REGION=VALUE", where=option, fix=f"e.g. {option} {example}"
            )
        if region in pairs:
            raise BadInputError(f"{option} names {region} twice", where=option, fix="give each region once")
        pairs[region] = value
    return tuple(pairs.items())


def parse_instance_types(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`c6i.large,ap-southeast-1=c7g.large` -> ("c6i.large", (("ap-southeast-1", "c7g.large"),))."""
    default, _, rest = text.partition(",")
    if "=" in default:
        default, rest = "c6i.large", text
    overrides = parse_region_values(
        "--instance-type", rest, r"[a-z][a-z0-9-]*\.[a-z0-9]+", "c6i.large,ap-southeast-1=c7g.large"
    )
    return default.strip(), overrides


SpotOption = Annotated[bool, typer.Option("--spot", help="aws: use spot instances.")]
TtlOption = Annotated[
    int,
    typer.Option(
        "--ttl", min=10, max=1440, help="aws: minutes after boot when every injector powers itself off."
    ),
]


def _checked(option: str, check: Callable[[Any], object]) -> Callable[[Any], Any]:
    """An option callback: `check(value)` raises a spike error, printed as spike prints errors."""

    def callback(value: Any) -> Any:
        if value is not None:
            try:
                check(value)
            except SpikeError as exc:
                exc.where = option
                exit_with(exc)
        return value

    return callback


def _operator_cidr(value: str) -> None:
    from loadorch.plan.cost import check_operator_cidr

    check_operator_cidr(value, force_wide=True)  # the width is judged with --allow-wide-operator-cidr


def _endpoint(value: str) -> None:
    try:
        check_base_url(value)
    except ValueError as exc:
        raise BadInputError(
            f"invalid AWS endpoint: {exc}",
            fix="give the emulator's URL, e.g. --aws-endpoint http://127.0.0.1:5000",
        ) from None


def _finite_non_negative(value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise BadInputError(f"{value} is not a number >= 0", fix="give a finite number, e.g. 2.5")


OperatorCidrOption = Annotated[
    str | None,
    typer.Option(
        help="aws: SSH to the injectors is allowed from here only (default: this machine's address).",
        callback=_checked("--operator-cidr", _operator_cidr),
    ),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        help="aws: refuse to create the fleet if its estimated cost (USD) is higher.",
        callback=_checked("--max-cost", _finite_non_negative),
    ),
]
AwsEndpointOption = Annotated[
    str | None,
    typer.Option(
        help="aws: send every AWS call here (LocalStack, moto) instead of AWS.",
        callback=_checked("--aws-endpoint", _endpoint),
    ),
]
AwsRoleArnOption = Annotated[
    str | None,
    typer.Option(
        help="aws: assume this IAM role (a dedicated load-test account) for Terraform, the leftovers "
        "check and the reaper; credentials for it come from the standard chain.",
    ),
]
AwsExternalIdOption = Annotated[
    str | None,
    typer.Option(
        envvar="SPIKE_AWS_EXTERNAL_ID",
        show_envvar=True,
        help="aws: the external id the role's trust policy requires.",
    ),
]
AwsRegionProfileOption = Annotated[
    str | None,
    typer.Option(
        help="aws: a named profile (~/.aws/config) per region, e.g. eu-west-2=load-eu,us-east-1=load-us.",
    ),
]


def aws_account(role_arn: str | None, external_id: str | None, region_profiles: str | None) -> AwsAccount:
    """The account the aws provider acts in, from the three options; refusals name the option."""
    from loadorch.cloud.aws import AwsAccount, parse_region_profiles

    return AwsAccount(
        role_arn=role_arn, external_id=external_id, region_profiles=parse_region_profiles(region_profiles)
    )


HostKeyTimeoutOption = Annotated[
    float,
    typer.Option(
        help="aws: seconds to wait for each instance's console to show its SSH host keys.",
        callback=_checked("--host-key-timeout", _finite_non_negative),
    ),
]


def aws_settings(
    instance_type: str,
    spot: bool,
    ttl: int,
    operator_cidr: str | None,
    max_cost: float | None,
    aws_endpoint: str | None,
    host_key_timeout: float = 600.0,
    account: AwsAccount | None = None,
    allow_wide_operator_cidr: bool = False,
    subnet: str | None = None,
    vpc: str | None = None,
    ami: str | None = None,
    ssh_user: str = "ec2-user",
    public_ip: bool = True,
) -> AwsSettings:
    from loadorch.cloud.aws import AwsAccount
    from loadorch.providers.aws import AwsSettings

    default_type, region_types = parse_instance_types(instance_type)
    return AwsSettings(
        instance_type=default_type,
        instance_types=region_types,
        subnets=parse_region_values("--subnet", subnet, r"subnet-[0-9a-f]+", "eu-west-2=subnet-0abc"),
        vpcs=parse_region_values("--vpc", vpc, r"vpc-[0-9a-f]+", "eu-west-2=vpc-0abc"),
        ami_id=ami,
        ssh_user=ssh_user,
        public_ip=public_ip,
        use_spot=spot,
        ttl_minutes=ttl,
        operator_cidr=operator_cidr,
        max_cost_usd=max_cost,
        endpoint=aws_endpoint,
        host_key_timeout_s=host_key_timeout,
        account=account or AwsAccount(),
        allow_wide_operator_cidr=allow_wide_operator_cidr,
    )


def aws_provider(settings: AwsSettings, progress: Progress | None = None) -> AwsProvider:
    from loadorch.providers.aws import AwsProvider

    return AwsProvider(settings, cache_dir=build_cache_dir(), progress=progress)
