"""What every provider tells the run session, typed (no provider is asked with getattr)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadorch.cloud.aws import AwsAccount
from loadorch.errors import BadInputError
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import load_profile
from loadorch.providers.aws import AwsProvider, AwsSettings
from loadorch.providers.base import Provider
from loadorch.providers.local import LocalProvider
from loadorch.providers.static import StaticProvider

INVENTORY = """\
hosts:
  - {host: 127.0.0.2, region: eu-west-2, key: id_ed25519, host_key: "SHA256:x"}
"""


def plan(regions: tuple[str, ...]):
    return plan_run(
        load_profile("smoke").profile, PlanOptions(now_ms=1_000_000, regions=regions, provider="static")
    )


def test_the_local_provider_refuses_nothing_and_journals_nothing() -> None:
    provider: Provider = LocalProvider()
    assert provider.check_plan(plan(("eu-west-2",))) == ()
    assert provider.check_target("http://127.0.0.1:8080") is None
    assert provider.recovery_details() == {}
    assert provider.checks_target_from_injectors is False


def test_a_static_fleet_refuses_a_region_it_has_no_host_for_and_journals_its_inventory(
    tmp_path: Path,
) -> None:
    (tmp_path / "hosts.yaml").write_text(INVENTORY)
    (tmp_path / "id_ed25519").write_text("not read here")
    provider: Provider = StaticProvider(tmp_path / "hosts.yaml", cache_dir=tmp_path / "cache")
    assert provider.check_plan(plan(("eu-west-2",))) == ()
    with pytest.raises(BadInputError) as caught:
        provider.check_plan(plan(("us-east-1",)))
    assert "region 'us-east-1' needs 1 injector(s); the inventory has 0 host(s)" in caught.value.message
    assert provider.recovery_details() == {"inventory": str(tmp_path / "hosts.yaml")}
    assert provider.checks_target_from_injectors is True


def test_an_aws_fleet_journals_its_endpoint_and_account_never_a_secret(tmp_path: Path) -> None:
    account = AwsAccount(role_arn="arn:aws:iam::111111111111:role/spike", external_id="not-a-secret-but-kept")
    provider = AwsProvider(
        AwsSettings(endpoint="http://127.0.0.1:5000", operator_cidr="127.0.0.1/32", account=account),
        cache_dir=tmp_path,
    )
    details = provider.recovery_details()
    assert details["aws_endpoint"] == "http://127.0.0.1:5000"
    assert details["aws_account"] == account.to_dict()
    assert "AWS_SECRET_ACCESS_KEY" not in str(details) and "secret_access_key" not in str(details)
