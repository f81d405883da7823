"""The capacity preflight against a real moto server.

What moto 5 really answers, and so what each test stands on:
- DescribeInstanceTypeOfferings (location type region) from its snapshot of AWS's offerings:
  c7a is not offered in sa-east-1 there, c7g not in me-central-1; exact filter values only
  (no wildcards), which is all the preflight sends.
- DescribeInstanceTypes with vCPUs, and DescribeInstances with the instances the tests launch
  (spot ones carry InstanceLifecycle=spot; no CpuOptions, so vCPUs come from the type).
- Service Quotas knows only VPC quotas: GetServiceQuota for ec2 L-1216C47A answers
  NoSuchResourceException. So the warning path runs against moto's own answer, and the
  refusal path (a quota that is exceeded) against a Service Quotas client answering, through a
  botocore Stubber, what AWS documents for GetServiceQuota, while EC2 stays moto's.

AWS_ENDPOINT_URL points at a closed loopback port, so any call that forgets the endpoint fails
(and could never reach AWS).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto_server import FAKE_CREDENTIALS, MotoServer

from loadorch.cloud import capacity
from loadorch.cloud.aws import aws_client
from loadorch.cloud.capacity import ON_DEMAND_STANDARD_QUOTA, SPOT_STANDARD_QUOTA, check_capacity
from loadorch.errors import PreflightError


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as moto:
        yield moto


@pytest.fixture
def moto(moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    request = urllib.request.Request(f"{moto_server.endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass
    return moto_server


def offered(moto: MotoServer, region: str, types: list[str]) -> set[str]:
    answer = moto.client("ec2", region).describe_instance_type_offerings(
        LocationType="region", Filters=[{"Name": "instance-type", "Values": types}]
    )
    return {o["InstanceType"] for o in answer["InstanceTypeOfferings"]}


def launch(moto: MotoServer, region: str, instance_type: str, count: int, *, spot: bool = False) -> None:
    ec2 = moto.client("ec2", region)
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    extra: dict[str, Any] = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType=instance_type, **extra)


def test_offered_types_pass_with_vcpus_and_a_warning_where_moto_has_no_quota(moto: MotoServer) -> None:
    report = check_capacity(
        {"eu-west-2": 3, "sa-east-1": 2, "us-east-1": 0}, "c6i.xlarge", spot=False, endpoint=moto.endpoint
    )
    # us-east-1 has no instances: nothing asked, nothing reported.
    assert [r.region for r in report.regions] == ["eu-west-2", "sa-east-1"]
    eu, sa = report.regions
    assert (eu.instances, eu.vcpus_per_instance, eu.planned_vcpus) == (3, 4, 12)
    assert (sa.planned_vcpus, sa.architectures) == (8, ("x86_64",))
    assert report.planned_vcpus == 20
    assert eu.fits is None and eu.quota_vcpus is None
    assert len(report.warnings) == 2
    for warning, region in zip(report.warnings, ("eu-west-2", "sa-east-1"), strict=True):
        assert warning.startswith(f"vCPU quota not checked in {region}: ")
        assert "Service Quotas has no value for ec2 quota L-1216C47A (NoSuchResourceException" in warning
    assert report.to_dict()["regions"][0]["planned_vcpus"] == 12


def test_spot_asks_for_the_spot_quota(moto: MotoServer) -> None:
    report = check_capacity({"eu-west-2": 1}, "t3.medium", spot=True, endpoint=moto.endpoint)
    assert report.spot and report.regions[0].planned_vcpus == 2
    (warning,) = report.warnings
    assert f"ec2 quota {SPOT_STANDARD_QUOTA}" in warning


def test_a_type_not_offered_in_a_region_is_refused_with_offered_alternatives(moto: MotoServer) -> None:
    # moto's snapshot of AWS: c7a is not offered in sa-east-1, but is in eu-west-2.
    assert offered(moto, "sa-east-1", ["c7a.large"]) == set()
    assert offered(moto, "eu-west-2", ["c7a.large"]) == {"c7a.large"}
    with pytest.raises(PreflightError) as caught:
        check_capacity({"eu-west-2": 2, "sa-east-1": 1}, "c7a.large", spot=False, endpoint=moto.endpoint)
    error = caught.value
    assert error.message == "EC2 does not offer c7a.large in sa-east-1"
    assert error.where == "capacity preflight (sa-east-1)"
    assert error.fix is not None and "leave sa-east-1 out of --regions" in error.fix
    suggested = error.fix.split("--instance-type ", 1)[1].split(",", 1)[0].split(" or ")
    assert suggested and len(suggested) <= 3
    assert "c7a.large" not in suggested
    # Every suggestion really is offered there, and has the same size and architecture.
    assert offered(moto, "sa-east-1", suggested) == set(suggested)
    assert all(s.endswith(".large") and not s.split(".")[0].endswith("g") for s in suggested)


def test_every_region_refused_is_in_the_one_error(moto: MotoServer) -> None:
    with pytest.raises(PreflightError) as caught:
        check_capacity(
            {"me-central-1": 1, "eu-west-2": 1, "ap-southeast-4": 1},
            "c7g.large",
            spot=False,
            endpoint=moto.endpoint,
        )
    error = caught.value
    assert error.message == (
        "EC2 does not offer c7g.large in me-central-1; EC2 does not offer c7g.large in ap-southeast-4"
    )
    assert error.fix is not None
    # A Graviton type gets Graviton suggestions: the same AMI architecture.
    for region in ("me-central-1", "ap-southeast-4"):
        part = error.fix.split(f"offers in {region}, e.g. --instance-type ", 1)[1].split(",", 1)[0]
        suggested = part.split(" or ")
        assert offered(moto, region, suggested) == set(suggested)
        assert all(s.split(".")[0].endswith("g") for s in suggested), suggested


def test_an_unknown_type_is_refused_naming_it(moto: MotoServer) -> None:
    with pytest.raises(PreflightError, match=r"EC2 does not offer c6i\.huge in eu-west-2") as caught:
        check_capacity({"eu-west-2": 1}, "c6i.huge", spot=False, endpoint=moto.endpoint)
    assert caught.value.fix is not None
    assert "c6i.large" in caught.value.fix


def test_a_family_with_its_own_quota_is_not_checked_and_says_so(moto: MotoServer) -> None:
    report = check_capacity({"eu-west-2": 1}, "g4dn.xlarge", spot=False, endpoint=moto.endpoint)
    (warning,) = report.warnings
    assert warning.startswith(
        "vCPU quota not checked in eu-west-2: g4dn.xlarge is not in the standard families"
    )


class StubbedQuotas:
    """Service Quotas clients answering GetServiceQuota as AWS documents it, one per region (the
    preflight asks regions in parallel); EC2 clients are moto's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stubbers: dict[str, Stubber] = {}
        self.clients: dict[str, Any] = {}
        monkeypatch.setattr(capacity, "aws_client", self.client)

    def quota(self, region: str, code: str, value: float) -> None:
        client = boto3.client(
            "service-quotas",
            region_name=region,
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        stubber = Stubber(client)
        stubber.add_response(
            "get_service_quota",
            {
                "Quota": {
                    "ServiceCode": "ec2",
                    "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                    "QuotaArn": f"arn:aws:servicequotas:{region}:123456789012:ec2/{code}",
                    "QuotaCode": code,
                    "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
                    "Value": value,
                    "Unit": "None",
                    "Adjustable": True,
                    "GlobalQuota": False,
                }
            },
            {"ServiceCode": "ec2", "QuotaCode": code},
        )
        stubber.activate()
        self.stubbers[region] = stubber
        self.clients[region] = client

    def client(self, service: str, region: str, endpoint: str | None = None) -> Any:
        if service == "service-quotas":
            return self.clients[region]
        return aws_client(service, region, endpoint)

    def all_asked(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


def test_a_fleet_within_the_quota_passes_counting_what_already_runs(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Already running in eu-west-2: 2 x c6i.large on-demand (4 vCPUs), plus what must not count
    # against the on-demand standard quota: a spot t3.medium and a g4dn.xlarge (its own quota).
    launch(moto, "eu-west-2", "c6i.large", 2)
    launch(moto, "eu-west-2", "t3.medium", 1, spot=True)
    launch(moto, "eu-west-2", "g4dn.xlarge", 1)
    quotas = StubbedQuotas(monkeypatch)
    quotas.quota("eu-west-2", ON_DEMAND_STANDARD_QUOTA, 16.0)
    report = check_capacity({"eu-west-2": 3}, "c6i.xlarge", spot=False, endpoint=moto.endpoint)
    quotas.all_asked()
    (eu,) = report.regions
    assert (eu.planned_vcpus, eu.in_use_vcpus, eu.quota_vcpus, eu.quota_code) == (12, 4, 16.0, "L-1216C47A")
    assert eu.fits is True and report.warnings == ()
    assert eu.describe() == (
        "eu-west-2: 3 x c6i.xlarge = 12 vCPUs (4 each); quota 16 (L-1216C47A), 4 already in use"
    )


def test_a_fleet_over_the_quota_is_refused_with_the_figures_and_the_request(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch(moto, "eu-west-2", "c6i.large", 2)
    quotas = StubbedQuotas(monkeypatch)
    quotas.quota("eu-west-2", ON_DEMAND_STANDARD_QUOTA, 16.0)
    quotas.quota("us-east-1", ON_DEMAND_STANDARD_QUOTA, 640.0)
    with pytest.raises(PreflightError) as caught:
        check_capacity({"eu-west-2": 4, "us-east-1": 4}, "c6i.xlarge", spot=False, endpoint=moto.endpoint)
    quotas.all_asked()
    error = caught.value
    assert error.where == "capacity preflight (eu-west-2)"
    assert error.message == (
        "the run needs 16 on-demand vCPUs in eu-west-2 (4 x c6i.xlarge, 4 each) and 4 are already in use "
        "there, 20 in all, over the account's quota of 16 vCPUs (L-1216C47A)"
    )
    assert error.fix is not None
    assert (
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-1216C47A "
        "--desired-value 20 --region eu-west-2" in error.fix
    )
    assert "a smaller --instance-type" in error.fix


@pytest.mark.parametrize(("quota", "fits"), [(10.0, True), (9.0, False)])
def test_spot_counts_spot_vcpus_against_the_spot_quota(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, quota: float, fits: bool
) -> None:
    launch(moto, "eu-west-2", "t3.medium", 3, spot=True)  # 6 spot vCPUs
    launch(moto, "eu-west-2", "c6i.large", 4)  # on-demand: not counted against the spot quota
    quotas = StubbedQuotas(monkeypatch)
    quotas.quota("eu-west-2", SPOT_STANDARD_QUOTA, quota)
    if fits:
        (eu,) = check_capacity({"eu-west-2": 2}, "t3.medium", spot=True, endpoint=moto.endpoint).regions
        assert (eu.planned_vcpus, eu.in_use_vcpus, eu.quota_code, eu.fits) == (
            4,
            6,
            SPOT_STANDARD_QUOTA,
            True,
        )
    else:
        with pytest.raises(PreflightError) as caught:
            check_capacity({"eu-west-2": 2}, "t3.medium", spot=True, endpoint=moto.endpoint)
        assert caught.value.message == (
            "the run needs 4 spot vCPUs in eu-west-2 (2 x t3.medium, 2 each) and 6 are already in use there, "
            "10 in all, over the account's quota of 9 vCPUs (L-34B43A08)"
        )
    quotas.all_asked()
