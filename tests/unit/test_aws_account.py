"""The account spike's AWS calls act in: validation, per-region profiles, what a run records."""

from __future__ import annotations

import pytest

from loadorch.cloud.aws import AwsAccount, account_scope, current_account, parse_region_profiles
from loadorch.errors import BadInputError

ROLE = "arn:aws:iam::111111111111:role/spike-load-test"


def test_a_role_account_names_its_account_and_the_run_in_its_session() -> None:
    account = AwsAccount(role_arn=ROLE, external_id="ext-42").for_run("viral-x10-20261202-101500-a1b2c3")
    assert account.account_id == "111111111111"
    assert account.session_name == "spike-viral-x10-20261202-101500-a1b2c3"
    assert not account.is_default
    assert "ext-42" not in repr(account)  # kept out of tracebacks and logs


def test_a_long_run_id_is_cut_to_the_64_characters_sts_allows() -> None:
    account = AwsAccount(role_arn=ROLE).for_run("r" * 64)
    assert account.session_name == "spike-" + "r" * 58


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role_arn": "arn:aws:iam::1111:role/x"}, "is not an IAM role ARN"),
        ({"role_arn": "arn:aws:iam::111111111111:user/x"}, "is not an IAM role ARN"),
        ({"role_arn": ROLE, "external_id": "a b"}, "external id must be"),
        ({"external_id": "abc"}, "--aws-external-id needs --aws-role-arn"),
        ({"role_arn": ROLE, "session_name": "x"}, "role session name"),
    ],
)
def test_bad_accounts_are_refused_naming_what_is_wrong(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        AwsAccount(**kwargs)  # type: ignore[arg-type]


def test_region_profiles_parse_and_refuse_clearly() -> None:
    assert parse_region_profiles("eu-west-2=load-eu, us-east-1=load-us") == (
        ("eu-west-2", "load-eu"),
        ("us-east-1", "load-us"),
    )
    assert parse_region_profiles(None) == ()
    with pytest.raises(BadInputError, match="'eu-west-2' is not REGION=PROFILE"):
        parse_region_profiles("eu-west-2")
    with pytest.raises(BadInputError, match="names eu-west-2 twice"):
        parse_region_profiles("eu-west-2=a,eu-west-2=b")
    account = AwsAccount(region_profiles=parse_region_profiles("eu-west-2=load-eu"))
    assert account.profile_for("eu-west-2") == "load-eu" and account.profile_for("us-east-1") is None


def test_what_a_run_records_gives_the_same_account_back() -> None:
    account = AwsAccount(ROLE, "ext-42", "spike-r1", (("eu-west-2", "load-eu"),))
    assert AwsAccount.from_dict(account.to_dict()) == account
    assert AwsAccount.from_dict(None).is_default


def test_account_scope_restores_the_previous_account() -> None:
    before = current_account()
    with account_scope(AwsAccount(role_arn=ROLE)) as inside:
        assert current_account() == inside and inside.role_arn == ROLE
    assert current_account() == before
