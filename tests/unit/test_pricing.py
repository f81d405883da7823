"""The price table: shipped figures, the state-dir override, and parsing the AWS Pricing API.

moto does not emulate the Pricing API (its server answers get_products with a 500), so the
parser is tested on items written in the shape AWS returns (`aws pricing get-products`, format
aws_v1), and `refresh_prices` on a botocore Stubber that never touches the network.
"""

import importlib.util
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
from loadorch.providers.terraform.config import AWS_REGIONS

REPO = Path(__file__).resolve().parents[2]

# Where every family a user would pick is offered (moto's snapshot of DescribeInstanceTypeOfferings).
REQUIRED_REGIONS = {
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ap-southeast-1",
    "ap-northeast-1",
}
FAMILIES = ("t3", "t3a", "t4g", "c6i", "c6a", "c6g", "c7i", "c7a", "c7g", "m6i", "m6a", "m6g", "m7i", "m7g")
REQUIRED_TYPES = {
    *(
        f"{family}.{size}"
        for family in ("t3", "t3a", "t4g")
        for size in ("micro", "small", "medium", "large", "xlarge")
    ),
    *(f"{family}.{size}" for family in FAMILIES[3:] for size in ("large", "xlarge", "2xlarge")),
    *(f"{family}.medium" for family in ("c6g", "c7a", "c7g", "m6g", "m7g")),
}


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
    assert table.approximate is True
    assert "approximate" in table.source.lower() and "approximate" in table.note.lower()
    assert "spike prices --refresh" in table.note
    assert table.describe() == f"approximate list prices as of {table.taken_on} (built in)"
    assert set(table.regions) == set(AWS_REGIONS)
    assert set(table.ebs_gp3_usd_per_gb_month) == set(AWS_REGIONS)
    for region in REQUIRED_REGIONS:
        assert set(table.instance_usd_per_h[region]) >= REQUIRED_TYPES, region
    for region in AWS_REGIONS:
        assert 0.05 < table.ebs_gp3_usd_per_gb_month[region] < 0.2, region
        # Every region prices at least one x86 and one Graviton family a user would pick.
        families = {t.split(".")[0] for t in table.instance_usd_per_h[region]}
        assert families & {"t3", "c7i", "m6i", "m7i"} and families & {"t4g", "c6g", "m6g", "m7g"}, region
        assert families <= set(FAMILIES), region
        for instance_type, usd in table.instance_usd_per_h[region].items():
            assert 0.005 < usd < 1.0, (region, instance_type, usd)
            # Never cheaper than us-east-1, the cheapest region for every family here.
            assert usd >= table.instance_price("us-east-1", instance_type), (region, instance_type)
    assert set(table.spot_fraction) == set(FAMILIES)
    assert all(0.2 <= f <= 0.6 for f in table.spot_fraction.values())
    # A bigger size costs twice the smaller one in the same family.
    assert table.instance_price("us-east-1", "c6i.xlarge") == pytest.approx(
        2 * table.instance_price("us-east-1", "c6i.large")
    )
    assert table.instance_price("sa-east-1", "t3.small") == pytest.approx(
        table.instance_price("sa-east-1", "t3.medium") / 2
    )
    # Published list prices the table must carry as they are (us-east-1; eu-west-2; sa-east-1).
    assert table.instance_price("us-east-1", "t3.medium") == 0.0416
    assert table.instance_price("us-east-1", "c7g.large") == 0.0725
    assert table.instance_price("eu-west-2", "c6i.large") == 0.101
    assert table.instance_price("sa-east-1", "t3.medium") == 0.0672
    assert table.gp3_price("sa-east-1") == 0.152


def load_generator() -> Any:
    """scripts/price_table.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("price_table", REPO / "scripts" / "price_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_table_is_what_the_generator_makes_and_round_trips() -> None:
    generator = load_generator()
    assert generator.main(["--check"]) == 0
    shipped_text = (REPO / "loadorch" / "cloud" / "prices.json").read_text()
    table, unknown = generator.build_table()
    assert generator.render(table) == shipped_text
    # Regions missing from the offering snapshot are named in the table's own source text.
    assert all(region in table["source"] for region in unknown)
    assert pricing.load_shipped_prices().to_dict() == json.loads(shipped_text)


def test_the_generator_check_fails_on_a_changed_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = json.loads((REPO / "loadorch" / "cloud" / "prices.json").read_text())
    changed["instance_usd_per_hour"]["sa-east-1"]["t3.medium"] = 0.01
    target = tmp_path / "prices.json"
    target.write_text(json.dumps(changed, indent=2, sort_keys=True) + "\n")
    assert load_generator().main(["--check", "--output", str(target)]) == 1
    assert "run it to regenerate" in capsys.readouterr().err


def test_a_table_from_before_as_of_is_read_with_its_taken_on_date() -> None:
    table = pricing.PriceTable.from_dict(
        {
            "taken_on": "2025-06-01",
            "instance_usd_per_hour": {"eu-west-2": {"t3.medium": 0.0472}},
            "ebs_gp3_usd_per_gb_month": {"eu-west-2": 0.0928},
        },
        origin="old.json",
    )
    assert (table.as_of, table.approximate, dict(table.spot_fraction)) == ("2025-06-01", False, {})
    assert table.spot_price("eu-west-2", "t3.medium") is None
    assert table.describe() == "prices as of 2025-06-01 (old.json)"


def test_load_prices_uses_the_shipped_table_without_a_refresh(spike_home: Path) -> None:
    assert not spike_home.exists()
    assert pricing.load_prices() == pricing.load_shipped_prices()


def test_refreshed_table_in_the_state_dir_is_preferred(spike_home: Path) -> None:
    shipped = pricing.load_shipped_prices()
    data = shipped.to_dict()
    data["as_of"] = "2026-11-01"
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
        ('{"instance_usd_per_hour": {}, "ebs_gp3_usd_per_gb_month": {}}', "missing 'as_of'"),
        (
            '{"as_of": "x", "instance_usd_per_hour": {}, "ebs_gp3_usd_per_gb_month": {}, '
            '"spot_fraction_of_on_demand": {"t3": 1.5}}',
            "spot_fraction_of_on_demand.t3 must be > 0 and <= 1",
        ),
        (
            '{"as_of": "x", "instance_usd_per_hour": {}, "ebs_gp3_usd_per_gb_month": {}, "approximate": "yes"}',
            "'approximate' must be true or false",
        ),
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
    # Without a region, one answer covers every region (one call per type, not per region and type).
    every_region = {f["Field"] for f in pricing.instance_filters("c6i.large")}
    assert "regionCode" not in every_region and "instanceType" in every_region
    assert "regionCode" not in {f["Field"] for f in pricing.gp3_filters()}


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
    # One question per type and one for gp3, each answered for every region (us-east-1 is not asked for).
    expect(
        stubbed_pricing.stubber,
        pricing.instance_filters("c6i.large"),
        [
            compute_item("c6i.large", "eu-west-2", "0.1234"),
            compute_item("c6i.large", "sa-east-1", "0.1510", sku="SAE1"),
            compute_item("c6i.large", "us-east-1", "0.0850", sku="USE1"),
        ],
    )
    expect(
        stubbed_pricing.stubber,
        pricing.gp3_filters(),
        [gp3_item("eu-west-2", "0.0999"), gp3_item("sa-east-1", "0.1520"), gp3_item("us-east-1", "0.08")],
    )

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
    assert table.instance_price("us-east-1", "c6i.large") == shipped.instance_price("us-east-1", "c6i.large")
    assert "as of " + shipped.taken_on in table.note
    # Most figures are still the shipped approximations; spot fractions are kept.
    assert table.approximate is True
    assert table.spot_fraction == shipped.spot_fraction
    assert table.source.startswith("AWS Pricing API get_products on 2026-11-26")
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


def test_refresh_names_the_region_a_type_is_not_priced_in(spike_home: Path, stubbed_pricing: Stub) -> None:
    expect(
        stubbed_pricing.stubber,
        pricing.instance_filters("c7a.large"),
        [compute_item("c7a.large", "eu-west-2", "0.12")],
    )
    expect(
        stubbed_pricing.stubber,
        pricing.gp3_filters(),
        [gp3_item("eu-west-2", "0.0928"), gp3_item("sa-east-1", "0.152")],
    )
    with pytest.raises(BadInputError) as caught:
        pricing.refresh_prices(["c7a.large"], ["eu-west-2", "sa-east-1"], "http://127.0.0.1:9")
    text = caught.value.render()
    assert "no Linux on-demand price for c7a.large in sa-east-1" in text
    assert "eu-west-2" not in text.split("price for", 1)[1].split("\n")[0]
    assert "that EC2 offers the type there; nothing was written" in text
    assert not (spike_home / "prices.json").exists()


def test_a_refresh_of_everything_in_a_table_is_no_longer_approximate(
    spike_home: Path, stubbed_pricing: Stub
) -> None:
    small = pricing.PriceTable(
        taken_on="2025-06-01",
        note="",
        instance_usd_per_h={"eu-west-2": {"t3.medium": 0.0472}},
        ebs_gp3_usd_per_gb_month={"eu-west-2": 0.0928},
        approximate=True,
        spot_fraction={"t3": 0.35},
    )
    spike_home.mkdir()
    (spike_home / "prices.json").write_text(json.dumps(small.to_dict()))
    expect(
        stubbed_pricing.stubber,
        pricing.instance_filters("t3.medium", "eu-west-2"),
        [compute_item("t3.medium", "eu-west-2", "0.0480")],
    )
    expect(stubbed_pricing.stubber, pricing.gp3_filters("eu-west-2"), [gp3_item("eu-west-2", "0.0930")])
    table = pricing.refresh_prices(endpoint="http://127.0.0.1:9", today=date(2026, 12, 1))
    assert (table.approximate, table.taken_on) == (False, "2026-12-01")
    assert table.describe() == f"prices as of 2026-12-01 ({spike_home / 'prices.json'})"
    assert table.spot_price("eu-west-2", "t3.medium") == pytest.approx(0.048 * 0.35)


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
