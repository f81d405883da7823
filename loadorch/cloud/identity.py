"""Who spike is in AWS: the credentials' identity, an assumed role's, and the operator's address.

`check_credentials` is the aws provider's first AWS call: STS GetCallerIdentity, with the default
chain and then, when an `AwsAccount` names a role or per-region profiles, in that account (so a
trust policy that refuses spike, or a wrong external id, is said before anything is built).
Every failure is a PreflightError naming the problem, the place and the fix.
"""

from __future__ import annotations

import urllib.request

import boto3
import botocore.config
import botocore.exceptions

from loadorch.cloud.aws import (
    AWS_FAILURES,
    DEFAULT_QUERY_REGION,
    AwsAccount,
    account_scope,
    aws_client,
    error_code,
)
from loadorch.errors import PreflightError, SpikeError
from loadorch.plan.cost import check_operator_cidr
from loadorch.profiles.model import check_base_url

_STS_CONFIG = botocore.config.Config(
    retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=15
)
_CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.SSOError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.CredentialRetrievalError,
)
_REJECTED_CODES = {
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "AuthFailure",
}
_CREDENTIALS_FIX = (
    "set AWS_PROFILE (then `aws sso login` if it is an SSO profile) or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY in the environment"
)


def check_credentials(endpoint: str | None = None, account: AwsAccount | None = None) -> str:
    """The caller's ARN from STS GetCallerIdentity: proof that AWS (or the emulator at `endpoint`)
    accepts the credentials. Every failure is a PreflightError naming the problem and the fix.

    A client of its own, with few retries and short timeouts: a wrong endpoint must be said in
    seconds, not after the retries of a long sweep.
    """
    if endpoint is not None:
        try:
            check_base_url(endpoint)
        except ValueError as exc:
            raise PreflightError(
                f"invalid AWS endpoint: {exc}",
                where="--aws-endpoint",
                fix="give the emulator's URL, e.g. --aws-endpoint http://127.0.0.1:5000",
            ) from None
    place = endpoint or "AWS STS"
    unreachable_fix = (
        f"check --aws-endpoint {endpoint}: is the emulator running there?"
        if endpoint
        else "check the network (and HTTPS_PROXY, AWS_ENDPOINT_URL if set), or give --aws-endpoint for an emulator"
    )
    try:
        session = boto3.session.Session()
        client = session.client(
            "sts",
            region_name=session.region_name or DEFAULT_QUERY_REGION,
            endpoint_url=endpoint,
            config=_STS_CONFIG,
        )
        answer = client.get_caller_identity()
    except _CREDENTIAL_ERRORS as exc:
        raise PreflightError(f"no usable AWS credentials: {exc}", where=place, fix=_CREDENTIALS_FIX) from None
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if code in _REJECTED_CODES:
            raise PreflightError(
                f"AWS rejected the credentials ({code}): {message}",
                where=place,
                fix="refresh them (`aws sso login`, or new access keys) or choose another AWS_PROFILE",
            ) from None
        raise PreflightError(
            f"STS GetCallerIdentity failed ({code}): {message}", where=place, fix=unreachable_fix
        ) from None
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        raise PreflightError(f"cannot reach {place}: {exc}", where=place, fix=unreachable_fix) from None
    except (*AWS_FAILURES, ValueError) as exc:  # an answer that is not AWS's, a URL botocore refuses
        raise PreflightError(
            f"STS GetCallerIdentity failed: {exc}", where=place, fix=unreachable_fix
        ) from None
    if account is None or account.is_default:
        return str(answer.get("Arn", ""))
    return check_account(account, endpoint)


def check_account(account: AwsAccount, endpoint: str | None = None) -> str:
    """The ARN spike acts as in `account` (the assumed role's session, or the first region profile's)."""
    regions = [region for region, _ in account.region_profiles] or [DEFAULT_QUERY_REGION]
    arn = ""
    for region in regions:
        place = f"{account.role_arn or 'profile ' + str(account.profile_for(region))} ({region})"
        try:
            with account_scope(account):
                arn = str(aws_client("sts", region, endpoint).get_caller_identity().get("Arn", ""))
        except SpikeError as exc:  # the role could not be assumed: its message says why
            raise PreflightError(exc.message, where=place, fix=exc.fix) from None
        except _CREDENTIAL_ERRORS as exc:
            raise PreflightError(
                f"no usable AWS credentials: {exc}", where=place, fix=_CREDENTIALS_FIX
            ) from None
        except (botocore.exceptions.ClientError, *AWS_FAILURES) as exc:
            raise PreflightError(
                f"STS GetCallerIdentity in the load-test account failed: {exc}",
                where=place,
                fix="check the role ARN, the external id and the profile names",
            ) from None
    return arn


def detect_operator_cidr(timeout_s: float = 5.0) -> str:
    """This machine's public address as a /32, from AWS's own checkip service."""
    try:
        with urllib.request.urlopen("https://checkip.amazonaws.com/", timeout=timeout_s) as answer:
            address = answer.read().decode().strip()
    except OSError as exc:
        raise PreflightError(
            f"cannot detect this machine's public address: {exc}",
            fix="give --operator-cidr (the address or network SSH to the injectors comes from)",
        ) from None
    return check_operator_cidr(address)
