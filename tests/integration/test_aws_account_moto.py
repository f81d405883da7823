"""A dedicated load-test account, against a real moto server: the role spike assumes (STS
AssumeRole with an external id and a session naming the run), per-region named profiles, and the
leftovers check and `spike reap` acting in that account, not in the caller's.

moto keeps every account apart: what is created with a role's temporary credentials lives in the
role's account, so a check that forgot the role would see nothing and wrongly call the run clean.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto_server import FAKE_CREDENTIALS, MotoServer
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.cloud.aws import AwsAccount, account_scope, aws_client, current_account, parse_region_profiles
from loadorch.cloud.identity import check_credentials
from loadorch.cloud.leftovers import find_run_resources
from loadorch.cloud.tags import run_tags

ROLE = "arn:aws:iam::111111111111:role/spike-load-test"
REGIONS = ("eu-west-2", "us-east-1")
RUN = "acct-20261202-101500-a1b2c3"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def env(moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("SPIKE_HOME", str(tmp_path / "spike-home"))
    request = urllib.request.Request(f"{moto.endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass
    return moto


def seed(region: str, run_id: str) -> str:
    """A key pair of the run, made in whatever account is current; returns its name (its id to spike)."""
    ec2 = aws_client("ec2", region, _endpoint())
    tags = [
        {"Key": k, "Value": v}
        for k, v in run_tags(run_id, "sre@example.com", "2030-01-01T00:00:00Z", region).items()
    ]
    answer = ec2.create_key_pair(
        KeyName=f"spike-{run_id}-{region}", TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}]
    )
    return str(answer["KeyName"])


_ENDPOINT: dict[str, str] = {}


def _endpoint() -> str:
    return _ENDPOINT["url"]


@pytest.fixture(autouse=True)
def _remember_endpoint(env: MotoServer) -> None:
    _ENDPOINT["url"] = env.endpoint


def caller(region: str) -> str:
    return str(aws_client("sts", region, _endpoint()).get_caller_identity()["Arn"])


def test_the_role_is_assumed_with_a_session_naming_the_run(env: MotoServer) -> None:
    account = AwsAccount(role_arn=ROLE, external_id="spike-ext-1").for_run(RUN)
    arn = check_credentials(env.endpoint, account)
    assert arn == f"arn:aws:sts::111111111111:assumed-role/spike-load-test/spike-{RUN}"
    with account_scope(account):
        assert caller("eu-west-2") == arn
    assert caller("eu-west-2") == "arn:aws:sts::123456789012:user/moto"  # back to the caller's own


def test_leftovers_and_reap_act_in_the_load_test_account(env: MotoServer) -> None:
    account = AwsAccount(role_arn=ROLE).for_run(RUN)
    with account_scope(account):
        made = {seed(region, RUN) for region in REGIONS}
        found = find_run_resources(RUN, REGIONS, env.endpoint)
    assert {r.id for r in found} == made and {r.kind for r in found} == {"key-pair"}
    # the caller's own account holds nothing of the run: a check without the role sees nothing
    assert find_run_resources(RUN, REGIONS, env.endpoint) == []

    args = ["reap", "--run", RUN, "--region", ",".join(REGIONS), "--aws-endpoint", env.endpoint]
    dry = CliRunner().invoke(app, [*args, "--aws-role-arn", ROLE])
    assert dry.exit_code == 0, dry.output
    assert "found 2 spike resource(s)" in dry.output
    without_role = CliRunner().invoke(app, args)
    assert "nothing to reap" in without_role.output, without_role.output
    done = CliRunner().invoke(app, [*args, "--aws-role-arn", ROLE, "--yes"])
    assert done.exit_code == 0, done.output
    # the command's account ends with the command: what runs next in this process is not in it
    assert current_account() == AwsAccount()
    with account_scope(account):
        assert find_run_resources(RUN, REGIONS, env.endpoint) == []


def test_a_named_profile_per_region_is_used_for_that_region_only(env: MotoServer, tmp_path: Path) -> None:
    # load-eu assumes a role in account 222222222222 from the caller's credentials, as a shared
    # config with role_arn + credential_source does; the STS call goes to moto too
    (tmp_path / "aws-config").write_text(
        "[profile load-eu]\n"
        "role_arn = arn:aws:iam::222222222222:role/spike-eu\n"
        "credential_source = Environment\n"
        f"endpoint_url = {env.endpoint}\n"
        "region = eu-west-2\n"
    )
    account = AwsAccount(region_profiles=parse_region_profiles("eu-west-2=load-eu"))
    with account_scope(account):
        assert caller("eu-west-2").startswith("arn:aws:sts::222222222222:assumed-role/spike-eu/")
        assert caller("us-east-1") == "arn:aws:sts::123456789012:user/moto"
        seed("eu-west-2", RUN)
        assert [r.region for r in find_run_resources(RUN, REGIONS, env.endpoint)] == ["eu-west-2"]
    assert find_run_resources(RUN, REGIONS, env.endpoint) == []


def test_an_unusable_region_profile_is_refused_before_anything_is_built(env: MotoServer) -> None:
    account = AwsAccount(region_profiles=(("eu-west-2", "no-such-profile"),))
    from loadorch.errors import PreflightError

    with pytest.raises(PreflightError) as caught:
        check_credentials(env.endpoint, account)
    assert "no-such-profile" in caught.value.render()
