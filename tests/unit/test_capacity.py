"""The capacity preflight's pieces that need no EC2: which quota a type counts against, and why a
quota could not be read (the paths moto cannot show: a refusal, an unreachable endpoint).

The whole preflight runs against a real moto server in tests/integration/test_capacity_moto.py.
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import pytest
from botocore.stub import Stubber

from loadorch.cloud import capacity


@pytest.mark.parametrize(
    "instance_type",
    [
        "c6i.large",
        "t3.micro",
        "t4g.small",
        "m7g.2xlarge",
        "r7iz.large",
        "z1d.large",
        "i4i.large",
        "im4gn.large",
        "is4gen.medium",
        "d3.xlarge",
        "h1.2xlarge",
        "a1.medium",
        "c7a.medium",
    ],
)
def test_standard_families_count_against_the_standard_quotas(instance_type: str) -> None:
    assert capacity.is_standard_family(instance_type)


@pytest.mark.parametrize(
    "instance_type",
    [
        "g4dn.xlarge",
        "p5.48xlarge",
        "inf2.xlarge",
        "dl1.24xlarge",
        "trn1.2xlarge",
        "hpc6a.48xlarge",
        "x2gd.large",
        "f1.2xlarge",
        "vt1.3xlarge",
        "mac2.metal",
        "u-6tb1.112xlarge",
    ],
)
def test_other_families_have_quotas_of_their_own(instance_type: str) -> None:
    assert not capacity.is_standard_family(instance_type)


def test_the_quota_follows_the_market() -> None:
    assert capacity.quota_code(spot=False) == "L-1216C47A"
    assert capacity.quota_code(spot=True) == "L-34B43A08"


def test_no_instances_means_no_questions(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client(*args: Any) -> Any:
        raise AssertionError(f"no AWS client may be made: {args}")

    monkeypatch.setattr(capacity, "aws_client", no_client)
    report = capacity.check_capacity({"eu-west-2": 0}, "c6i.large", spot=False, endpoint="http://127.0.0.1:9")
    assert (report.regions, report.warnings, report.planned_vcpus) == ((), (), 0)


def quotas_client(**config: Any) -> Any:
    # The discard port on loopback: nothing listens there, nothing leaves the machine.
    return boto3.client(
        "service-quotas",
        region_name="eu-west-2",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(**config) if config else None,
    )


def test_a_refused_quota_read_is_a_warning_naming_the_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    client = quotas_client()
    stubber = Stubber(client)
    stubber.add_client_error(
        "get_service_quota",
        "AccessDeniedException",
        "User is not authorized to perform servicequotas:GetServiceQuota",
    )
    stubber.activate()
    monkeypatch.setattr(capacity, "aws_client", lambda service, region, endpoint=None: client)
    value, why = capacity._quota_vcpus("eu-west-2", "L-1216C47A", None)
    assert value is None
    assert why.startswith(
        "Service Quotas refused GetServiceQuota (AccessDeniedException: User is not authorized"
    )
    assert "allow servicequotas:GetServiceQuota to have it checked" in why


def test_an_unreachable_service_quotas_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    client = quotas_client(retries={"max_attempts": 1}, connect_timeout=2)
    monkeypatch.setattr(capacity, "aws_client", lambda service, region, endpoint=None: client)
    value, why = capacity._quota_vcpus("eu-west-2", "L-1216C47A", "http://127.0.0.1:9")
    assert value is None
    assert why.startswith("Service Quotas cannot be reached (")
    assert "127.0.0.1:9" in why


def test_a_quota_answer_without_a_value_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    client = quotas_client()
    stubber = Stubber(client)
    stubber.add_response("get_service_quota", {"Quota": {"QuotaCode": "L-1216C47A"}})
    stubber.activate()
    monkeypatch.setattr(capacity, "aws_client", lambda service, region, endpoint=None: client)
    value, why = capacity._quota_vcpus("eu-west-2", "L-1216C47A", None)
    assert value is None
    assert why.startswith("Service Quotas answered without a value for L-1216C47A")


def test_a_region_capacity_fits_only_with_room_for_what_runs_already() -> None:
    def region(quota: float | None, in_use: int | None) -> capacity.RegionCapacity:
        return capacity.RegionCapacity(
            "eu-west-2", "c6i.large", 4, 2, ("x86_64",), "L-1216C47A", quota, in_use
        )

    assert region(16, 8).fits is True
    assert region(16, 9).fits is False
    assert region(None, None).fits is None
    assert region(16, 8).to_dict()["planned_vcpus"] == 8
