"""boto3 clients for spike, and the translation of AWS failures into spike's errors.

Credentials come only from boto3's usual chain (environment, shared profiles,
SSO, instance roles); spike never takes, stores or passes keys around. An
`endpoint` (a moto server or LocalStack) replaces AWS for every service.

Separate accounts: the injectors may live in a dedicated load-test account. `use_account()` sets,
for the whole process, the `AwsAccount` every client acts in: a role assumed with STS (external id,
a session name carrying the run id; the temporary credentials refresh themselves before they
expire, so a long run can still destroy its fleet), and/or a named profile per region. Terraform
gets the same account through its provider blocks (`assume_role`, `profile`), never through keys.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.parsers
import botocore.session

from loadorch.cloud.names import EXTERNAL_ID, ROLE_ARN, SESSION_NAME
from loadorch.errors import BadInputError, InfrastructureError, SpikeError

# Where account-wide questions (which regions exist) are asked when boto3 has no region configured.
DEFAULT_QUERY_REGION = "us-east-1"

_CLIENT_CONFIG = botocore.config.Config(
    retries={"max_attempts": 5, "mode": "standard"},
    connect_timeout=10,
    read_timeout=60,
)

# What a botocore call can raise besides ClientError: transport and credential failures, and an
# answer that is not AWS's format (a proxy's or an emulator's error page).
AWS_FAILURES = (botocore.exceptions.BotoCoreError, botocore.parsers.ResponseParserError)

_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.SSOError,
)
_AUTH_CODES = {
    "AuthFailure",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
}
_CREDENTIALS_FIX = (
    "give boto3 credentials: AWS_PROFILE (then `aws sso login` if it is an SSO profile), "
    "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment"
)


ROLE_SESSION_SECONDS = 3600  # refreshed before it ends: runs longer than an hour keep working


@dataclass(frozen=True)
class AwsAccount:
    """Where spike's AWS calls act: a role to assume, named profiles per region, or neither.

    `session_name` names the assumed-role session in CloudTrail (spike puts the run id in it);
    `region_profiles` maps a region to a named profile of the shared config (~/.aws/config); the
    role, if given, is assumed from each region's profile (or the default chain).
    """

    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_name: str = "spike"
    region_profiles: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.role_arn is not None and not ROLE_ARN.match(self.role_arn):
            raise BadInputError(
                f"--aws-role-arn {self.role_arn!r} is not an IAM role ARN",
                fix="give the role's ARN, e.g. arn:aws:iam::123456789012:role/spike-load-test",
            )
        if self.external_id is not None and not EXTERNAL_ID.match(self.external_id):
            raise BadInputError(
                "the external id must be 2 to 1224 letters, digits or + = , . @ : / - _",
                where="--aws-external-id",
                fix="give the external id the role's trust policy requires",
            )
        if not SESSION_NAME.match(self.session_name):
            raise BadInputError(
                f"role session name {self.session_name!r} must be 2 to 64 letters, digits or + = , . @ - _",
                fix="shorten it",
            )
        if self.external_id is not None and self.role_arn is None:
            raise BadInputError("--aws-external-id needs --aws-role-arn", fix="give the role to assume")

    @property
    def is_default(self) -> bool:
        return self.role_arn is None and not self.region_profiles

    @property
    def account_id(self) -> str | None:
        """The 12-digit account of the role, if one is assumed."""
        return self.role_arn.split(":")[4] if self.role_arn else None

    def profile_for(self, region: str) -> str | None:
        return dict(self.region_profiles).get(region)

    def for_run(self, run_id: str) -> AwsAccount:
        """The same account, its session named after the run (`spike-<run id>`, cut to 64)."""
        name = f"spike-{run_id}"[:64].rstrip("-")  # as Terraform's assume_role names it
        return AwsAccount(self.role_arn, self.external_id, name, self.region_profiles)

    def to_dict(self) -> dict[str, Any]:
        """What a run directory records so that recovery acts in the same account.

        The external id is kept too: AWS documents it as not secret (it guards against a confused
        deputy, it is not a credential), and the run's Terraform configuration holds it anyway.
        """
        return {
            "role_arn": self.role_arn,
            "external_id": self.external_id,
            "session_name": self.session_name,
            "region_profiles": dict(self.region_profiles),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AwsAccount:
        if not data:
            return cls()
        return cls(
            role_arn=data.get("role_arn"),
            external_id=data.get("external_id"),
            session_name=str(data.get("session_name") or "spike"),
            region_profiles=tuple(
                (str(k), str(v)) for k, v in dict(data.get("region_profiles") or {}).items()
            ),
        )


def parse_region_profiles(text: str | None) -> tuple[tuple[str, str], ...]:
    """`eu-west-2=load-eu,us-east-1=load-us` -> ((region, profile), ...); refusals name the bad item."""
    if not text:
        return ()
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        region, sep, profile = item.partition("=")
        region, profile = region.strip(), profile.strip()
        if not sep or not region or not profile or not re.match(r"^[\w.+@-]{1,128}$", profile):
            raise BadInputError(
                f"--aws-region-profile item {item!r} is not REGION=PROFILE",
                fix="write e.g. --aws-region-profile eu-west-2=load-eu,us-east-1=load-us",
            )
        if region in pairs:
            raise BadInputError(f"--aws-region-profile names {region} twice", fix="give each region once")
        pairs[region] = profile
    return tuple(pairs.items())


_session_lock = threading.Lock()
_shared_sessions: dict[tuple[Any, ...], Any] = {}
_account = AwsAccount()


def use_account(account: AwsAccount | None) -> None:
    """Every client made from now on (in any thread) acts in `account` (None: the default chain)."""
    global _account
    with _session_lock:
        _account = account or AwsAccount()


def current_account() -> AwsAccount:
    return _account


@contextlib.contextmanager
def account_scope(account: AwsAccount | None) -> Iterator[AwsAccount]:
    """`use_account` for the block, then back to what it was (tests, recovery of another run)."""
    previous = _account
    use_account(account)
    try:
        yield _account
    finally:
        use_account(previous)


def _session(region: str | None = None, endpoint: str | None = None) -> Any:
    """One boto3 session per (environment, account, profile), rebuilt when the AWS_* environment changes.

    A new session re-reads every service model (about 0.3 s for EC2); a shared one makes a client in
    milliseconds, which matters when every region is swept. The caller holds `_session_lock`:
    creating clients from one session in several threads at once is not safe.
    """
    account = _account
    profile = account.profile_for(region) if region else None
    fingerprint = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (fingerprint, profile, account.role_arn, account.external_id, account.session_name, endpoint)
    session = _shared_sessions.get(key)
    if session is None:
        base = boto3.session.Session(profile_name=profile)
        session = base if account.role_arn is None else _assumed_role_session(base, account, endpoint)
        _shared_sessions[key] = session
    return session


def _assumed_role_session(base: Any, account: AwsAccount, endpoint: str | None) -> Any:
    """A session whose credentials come from STS AssumeRole and refresh themselves before expiry."""
    assert account.role_arn is not None
    sts = base.client(
        "sts",
        region_name=base.region_name or DEFAULT_QUERY_REGION,
        endpoint_url=endpoint,
        config=_CLIENT_CONFIG,
    )

    def fetch() -> dict[str, str]:
        arguments: dict[str, Any] = {
            "RoleArn": account.role_arn,
            "RoleSessionName": account.session_name,
            "DurationSeconds": ROLE_SESSION_SECONDS,
        }
        if account.external_id is not None:
            arguments["ExternalId"] = account.external_id
        try:
            answer = sts.assume_role(**arguments)["Credentials"]
        except botocore.exceptions.ClientError as exc:
            raise InfrastructureError(
                f"cannot assume {account.role_arn} ({error_code(exc)}): "
                f"{exc.response.get('Error', {}).get('Message', exc)}",
                where="STS AssumeRole",
                fix="check the role's trust policy (it must trust your identity, and the external id if it "
                "requires one) and that your identity may call sts:AssumeRole on it",
            ) from None
        expiry = answer["Expiration"]
        if isinstance(expiry, datetime):
            expiry = expiry.astimezone(UTC).isoformat()
        return {
            "access_key": answer["AccessKeyId"],
            "secret_key": answer["SecretAccessKey"],
            "token": answer["SessionToken"],
            "expiry_time": str(expiry),
        }

    credentials = botocore.credentials.RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
    )
    core = botocore.session.get_session()
    # botocore has no public setter for refreshable credentials; this is how its own providers attach them
    core._credentials = credentials  # type: ignore[attr-defined]
    core.set_config_variable("region", base.region_name)
    return boto3.session.Session(botocore_session=core)


def aws_client(service: str, region: str, endpoint: str | None = None) -> Any:
    """A boto3 client for `service` in `region`, in the current account; `endpoint` points it at moto.

    Safe to call from several threads; the client itself may then be used from any thread.
    """
    try:
        with _session_lock:
            return _session(region, endpoint).client(
                service, region_name=region, endpoint_url=endpoint, config=_CLIENT_CONFIG
            )
    except _CREDENTIAL_ERRORS as exc:
        raise BadInputError(f"no usable AWS credentials: {exc}", fix=_CREDENTIALS_FIX) from exc


def translate_aws_error(exc: Exception, where: str) -> SpikeError:
    """The spike error for a botocore failure at `where` (a region, or region and resource)."""
    if isinstance(exc, SpikeError):
        return exc
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return BadInputError(f"no usable AWS credentials: {exc}", where=where, fix=_CREDENTIALS_FIX)
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if code in _AUTH_CODES:
            return InfrastructureError(
                f"AWS refused the call ({code}): {message}",
                where=where,
                fix="check the credentials' account and IAM permissions (ec2:Describe*, ec2:TerminateInstances, "
                "ec2:DeleteSecurityGroup, ec2:DeleteKeyPair, pricing:GetProducts), and that the region is enabled",
            )
        return InfrastructureError(f"AWS call failed ({code}): {message}", where=where)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return InfrastructureError(
            f"cannot reach the AWS endpoint: {exc}",
            where=where,
            fix="check the network, or the --aws-endpoint / AWS_ENDPOINT_URL you gave",
        )
    return InfrastructureError(f"AWS call failed: {exc}", where=where)


@contextlib.contextmanager
def aws_errors(where: str) -> Iterator[None]:
    """Turn any botocore failure inside the block into a spike error naming `where`."""
    try:
        yield
    except (*AWS_FAILURES, botocore.exceptions.ClientError) as exc:
        raise translate_aws_error(exc, where) from exc


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (`InvalidGroup.NotFound`, ...); '' for anything else."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _query_region() -> str:
    with _session_lock:
        return str(boto3.session.Session().region_name or DEFAULT_QUERY_REGION)


def all_regions(endpoint: str | None = None, only: Sequence[str] | None = None) -> tuple[str, ...]:
    """The regions enabled for this account (`describe_regions`), sorted.

    With `only`, those regions in the order given, after checking that each is one of them:
    a typo must not turn a sweep into a silent no-op.
    """
    region = _query_region()
    with aws_errors(f"describe_regions in {region}"):
        answer = aws_client("ec2", region, endpoint).describe_regions()
    known = sorted(str(r["RegionName"]) for r in answer.get("Regions", []))
    if not only:
        return tuple(known)
    unknown = [r for r in only if r not in known]
    if unknown:
        raise BadInputError(
            f"unknown or disabled region(s): {', '.join(unknown)}",
            fix=f"use regions enabled for this account: {', '.join(known)}",
        )
    return tuple(dict.fromkeys(only))
