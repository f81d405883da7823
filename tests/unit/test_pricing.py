"""The price table: shipped figures, the state-dir override, and parsing the AWS Pricing API.

moto does not emulate the Pricing API (its server answers get_products with a 500), so the
parser is tested on items written in the shape AWS returns (`aws pricing get-products`, format
aws_v1), and `refresh_prices` on a botocore Stubber that never touches the network.
"""

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from loadorch.cloud import pricing
from loadorch.errors import BadInputError, InfrastructureError

REQUIRED_REGIONS = {
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "ap-southeast-1",
    "ap-northeast-1",
}
REQUIRED_TYPES = {"t3.medium", "t3.large", "c6i.large", "c6i.xlarge", "c7i.large", "m6i.large"}


@pytest.fixture(autouse=True)
def spike_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "spike-home"
    monkeypatch.setenv("SPIKE_HOME", str(home))
    return home


def compute_item(
    instance_type: str,
    region: str,
    usd: str,
    *,
    os_name: str = "Linux",
    tenancy: str = "Shared",
    software: str = "NA",
    capacity: str = "Used",
    sku: str = "JRTCKXETXFAKE001",
) -> str:
    """One get_products PriceList entry as AWS sends it: a JSON string."""
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": region,
                    "location": "EU (London)" if region == "eu-west-2" else "US East (N. Virginia)",
                    "operatingSystem": os_name,
                    "tenancy": tenancy,
                    "preInstalledSw": software,
                    "capacitystatus": capacity,
                    "licenseModel": "No License required",
                    "usagetype": f"EUW2-BoxUsage:{instance_type}",
                    "servicecode": "AmazonEC2",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                                "appliesTo": [],
                                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2025-06-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                },
                "Reserved": {
                    f"{sku}.4NA7Y494T4": {
                        "priceDimensions": {
                            f"{sku}.4NA7Y494T4.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": "0.0010000000"},
                            }
                        },
                        "termAttributes": {"LeaseContractLength": "1yr", "PurchaseOption": "No Upfront"},
                    }
                },
            },
            "version": "20250601000000",
            "publicationDate": "2025-06-01T00:00:00Z",
        }
    )


def gp3_item(region: str, usd: str) -> str:
    return json.dumps(
        {
            "product": {
                "productFamily": "Storage",
                "attributes": {
                    "regionCode": region,
                    "volumeApiName": "gp3",
                    "volumeType": "General Purpose",
                    "storageMedia": "SSD-backed",
                    "usagetype": "EBS:VolumeUsage.gp3",
                },
                "sku": "GP3SKUFAKE",
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    "GP3SKUFAKE.JRTCKXETXF": {
                        "priceDimensions": {
                            "GP3SKUFAKE.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "GB-Mo",
                                "pricePerUnit": {"USD": usd},
                                "description": f"${usd} per GB-month of General Purpose (gp3) provisioned storage",
                            }
                        }
                    }
                }
            },
        }
    )


def test_shipped_table_covers_the_promised_regions_and_types_and_is_dated() -> None:
    table = pricing.load_shipped_prices()
    assert table.origin == "built in"
    assert date.fromisoformat(table.taken_on)
    assert "approximate" in table.note.lower()
    assert set(table.regions) >= REQUIRED_REGIONS
    for region in REQUIRED_REGIONS:
        assert set(table.instance_usd_per_h[region]) >= REQUIRED_TYPES, region
        assert 0 < table.ebs_gp3_usd_per_gb_month[region] < 0.2
        for instance_type, usd in table.instance_usd_per_h[region].items():
            assert 0.01 < usd < 1.0, (region, instance_type, usd)
    # A bigger size costs twice the smaller one in the same family.
    assert table.instance_price("us-east-1", "c6i.xlarge") == pytest.approx(
        2 * table.instance_price("us-east-1", "c6i.large")
    )


def test_load_prices_uses_the_shipped_table_without_a_refresh(spike_home: Path) -> None:
    assert not spike_home.exists()
    assert pricing.load_prices() == pricing.load_shipped_prices()


def test_refreshed_table_in_the_state_dir_is_preferred(spike_home: Path) -> None:
    shipped = pricing.load_shipped_prices()
    data = shipped.to_dict()
    data["taken_on"] = "2026-11-01"
    data["instance_usd_per_hour"]["eu-west-2"]["c6i.large"] = 0.5
    spike_home.mkdir()
    (spike_home / "prices.json").write_text(json.dumps(data))
    table = pricing.load_prices()
    assert table.origin == str(spike_home / "prices.json")
    assert table.taken_on == "2026-11-01"
    assert table.instance_price("eu-west-2", "c6i.large") == 0.5
    assert pricing.state_prices_path() == spike_home / "prices.json"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read the refreshed price table"),
        ("[]", "expected a JSON object"),
        ('{"taken_on": "2026-01-01", "ebs_gp3_usd_per_gb_month": {}}', "missing 'instance_usd_per_hour'"),
        (
            '{"taken_on": "x", "instance_usd_per_hour": {"eu-west-2": {"t3.medium": "cheap"}}, '
            '"ebs_gp3_usd_per_gb_month": {}}',
            "instance_usd_per_hour.eu-west-2.t3.medium must be a number >= 0",
        ),
    ],
)
def test_a_broken_state_dir_table_is_reported_with_its_path(
    spike_home: Path, content: str, message: str
) -> None:
    spike_home.mkdir()
    (spike_home / "prices.json").write_text(content)
    with pytest.raises(BadInputError) as caught:
        pricing.load_prices()
    text = caught.value.render()
    assert message in text
    assert str(spike_home / "prices.json") in text
    assert "spike prices --refresh" in text


def test_instance_price_list_parsing_keeps_only_linux_shared_on_demand_hours() -> None:
    items = [
        compute_item("c6i.large", "eu-west-2", "0.1010000000"),
        compute_item("t3.medium", "eu-west-2", "0.0472000000", sku="T3SKU"),
        compute_item("c6i.large", "eu-west-2", "0.1930000000", os_name="Windows", sku="WIN"),
        compute_item("c6i.large", "eu-west-2", "0.1110000000", tenancy="Dedicated", sku="DED"),
        compute_item("c6i.large", "eu-west-2", "0.2000000000", software="SQL Web", sku="SQL"),
        compute_item(
            "c6i.large", "eu-west-2", "0.0000000000", capacity="UnusedCapacityReservation", sku="CR"
        ),
        compute_item("c6i.large", "us-east-1", "0.0850000000", sku="USE1"),
    ]
    assert pricing.parse_instance_prices(items) == {
        "eu-west-2": {"c6i.large": 0.101, "t3.medium": 0.0472},
        "us-east-1": {"c6i.large": 0.085},
    }


def test_instance_price_list_parsing_keeps_the_highest_of_duplicates_and_skips_zero() -> None:
    items = [
        json.loads(compute_item("c6i.large", "eu-west-2", "0.1010000000")),
        compute_item("c6i.large", "eu-west-2", "0.1020000000", sku="OTHER"),
        compute_item("t3.medium", "eu-west-2", "0.0000000000", sku="FREE"),
    ]
    assert pricing.parse_instance_prices(items) == {"eu-west-2": {"c6i.large": 0.102}}


def test_gp3_price_list_parsing() -> None:
    items = [gp3_item("eu-west-2", "0.0928000000"), compute_item("c6i.large", "eu-west-2", "0.101")]
    assert pricing.parse_gp3_prices(items) == {"eu-west-2": 0.0928}


def test_filters_ask_for_linux_shared_used_capacity_by_region_code() -> None:
    filters = {f["Field"]: f["Value"] for f in pricing.instance_filters("c6i.large", "eu-west-2")}
    assert filters == {
        "instanceType": "c6i.large",
        "regionCode": "eu-west-2",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    assert all(f["Type"] == "TERM_MATCH" for f in pricing.instance_filters("c6i.large", "eu-west-2"))
    gp3 = {f["Field"]: f["Value"] for f in pricing.gp3_filters("us-east-1")}
    assert gp3 == {"productFamily": "Storage", "volumeApiName": "gp3", "regionCode": "us-east-1"}


@dataclass
class Stub:
    stubber: Stubber
    calls: list[tuple[str, str, Any]]


@pytest.fixture
def stubbed_pricing(monkeypatch: pytest.MonkeyPatch) -> Stub:
    # A client aimed at the discard port on loopback: even if a stub were missing, nothing leaves the machine.
    client = boto3.client(
        "pricing",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    stubber = Stubber(client)
    calls: list[tuple[str, str, Any]] = []

    def fake_client(service: str, region: str, endpoint: str | None = None) -> Any:
        calls.append((service, region, endpoint))
        return client

    monkeypatch.setattr(pricing, "aws_client", fake_client)
    stubber.activate()
    return Stub(stubber, calls)


def expect(stubber: Stubber, filters: list[dict[str, str]], items: list[str]) -> None:
    stubber.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": items},
        {"ServiceCode": "AmazonEC2", "Filters": filters, "FormatVersion": "aws_v1"},
    )


def test_refresh_writes_a_merged_table_to_the_state_dir(spike_home: Path, stubbed_pricing: Stub) -> None:
    expect(
        stubbed_pricing.stubber,
        pricing.instance_filters("c6i.large", "eu-west-2"),
        [compute_item("c6i.large", "eu-west-2", "0.1234")],
    )
    expect(stubbed_pricing.stubber, pricing.gp3_filters("eu-west-2"), [gp3_item("eu-west-2", "0.0999")])
    expect(
        stubbed_pricing.stubber,
        pricing.instance_filters("c6i.large", "sa-east-1"),
        [compute_item("c6i.large", "sa-east-1", "0.1510")],
    )
    expect(stubbed_pricing.stubber, pricing.gp3_filters("sa-east-1"), [gp3_item("sa-east-1", "0.1520")])

    table = pricing.refresh_prices(
        ["c6i.large"], ["eu-west-2", "sa-east-1"], "http://127.0.0.1:9", today=date(2026, 11, 26)
    )

    stubbed_pricing.stubber.assert_no_pending_responses()
    assert stubbed_pricing.calls == [("pricing", "us-east-1", "http://127.0.0.1:9")]
    assert table.taken_on == "2026-11-26"
    assert table.instance_price("eu-west-2", "c6i.large") == 0.1234
    assert table.instance_price("sa-east-1", "c6i.large") == 0.151
    assert table.gp3_price("sa-east-1") == 0.152
    # What was not refreshed is carried over from the shipped table.
    shipped = pricing.load_shipped_prices()
    assert table.instance_price("eu-west-2", "t3.medium") == shipped.instance_price("eu-west-2", "t3.medium")
    assert "taken on " + shipped.taken_on in table.note
    written = spike_home / "prices.json"
    assert table.origin == str(written)
    assert pricing.load_prices() == table
    assert json.loads(written.read_text()) == table.to_dict()


def test_refresh_with_a_missing_price_writes_nothing(spike_home: Path, stubbed_pricing: Stub) -> None:
    expect(stubbed_pricing.stubber, pricing.instance_filters("c6i.tiny", "eu-west-2"), [])
    expect(stubbed_pricing.stubber, pricing.gp3_filters("eu-west-2"), [gp3_item("eu-west-2", "0.0928")])
    with pytest.raises(BadInputError) as caught:
        pricing.refresh_prices(["c6i.tiny"], ["eu-west-2"], "http://127.0.0.1:9")
    assert "no Linux on-demand price for c6i.tiny in eu-west-2" in caught.value.render()
    assert not (spike_home / "prices.json").exists()


def test_refresh_reports_api_errors_as_spike_errors(spike_home: Path, stubbed_pricing: Stub) -> None:
    stubbed_pricing.stubber.add_client_error(
        "get_products", "AccessDeniedException", "not allowed", http_status_code=400
    )
    with pytest.raises(InfrastructureError) as caught:
        pricing.refresh_prices(["c6i.large"], ["eu-west-2"], "http://127.0.0.1:9")
    text = caught.value.render()
    assert "AWS refused the call (AccessDeniedException)" in text
    assert "pricing:GetProducts" in text
    assert not (spike_home / "prices.json").exists()
