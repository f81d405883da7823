"""boto3 clients for spike, and the translation of AWS failures into spike's errors.

Credentials come only from boto3's usual chain (environment, shared profiles,
SSO, instance roles); spike never takes, stores or passes keys around. An
`endpoint` (a moto server or LocalStack) replaces AWS for every service.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

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


_session_lock = threading.Lock()
_shared_session: dict[str, Any] = {}


def _session() -> Any:
    """One boto3 session for the process, rebuilt when the AWS_* environment changes.

    A new session re-reads every service model (about 0.3 s for EC2); a shared one makes a client in
    milliseconds, which matters when every region is swept. The caller holds `_session_lock`:
    creating clients from one session in several threads at once is not safe.
    """
    fingerprint = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    if _shared_session.get("fingerprint") != fingerprint:
        _shared_session["session"] = boto3.session.Session()
        _shared_session["fingerprint"] = fingerprint
    return _shared_session["session"]


def aws_client(service: str, region: str, endpoint: str | None = None) -> Any:
    """A boto3 client for `service` in `region`; `endpoint` points it at moto or LocalStack.

    Safe to call from several threads; the client itself may then be used from any thread.
    """
    try:
        with _session_lock:
            return _session().client(
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
        return str(_session().region_name or DEFAULT_QUERY_REGION)


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
