"""Terraform's `-json` UI without Terraform: each line's region and kind, the failure report's
diagnostics, and the per-region resource counts of apply and destroy (pure: no process, no clock)."""

from __future__ import annotations

import json

import pytest

from loadorch.providers.terraform.ui import ALL_REGIONS, ResourceTally, UiStream

# -- the -json UI stream -----------------------------------------------------------------------------------

# Recorded from `terraform apply -json` (Terraform 1.11, hashicorp/aws 5.100) against moto, trimmed:
# one region creates its resources, the other fails to import its key pair.
RECORDED_APPLY = r"""{"@level":"info","@message":"Terraform 1.11.4","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:50.100000Z","terraform":"1.11.4","type":"version","ui":"1.2"}
{"@level":"info","@message":"module.fleet_eu_west_2.data.aws_ssm_parameter.ami: Refreshing...","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:58.926000Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.data.aws_ssm_parameter.ami","module":"module.fleet_eu_west_2","resource":"data.aws_ssm_parameter.ami","implied_provider":"aws","resource_type":"aws_ssm_parameter","resource_name":"ami","resource_key":null},"action":"read"},"type":"apply_start"}
{"@level":"info","@message":"module.fleet_us_east_1.aws_key_pair.injector: Plan to create","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:59.563000Z","change":{"resource":{"addr":"module.fleet_us_east_1.aws_key_pair.injector","module":"module.fleet_us_east_1","resource":"aws_key_pair.injector","implied_provider":"aws","resource_type":"aws_key_pair","resource_name":"injector","resource_key":null},"action":"create"},"type":"planned_change"}
{"@level":"info","@message":"Plan: 7 to add, 0 to change, 0 to destroy.","@module":"terraform.ui","@timestamp":"2026-11-26T11:39:59.563500Z","changes":{"add":7,"change":0,"import":0,"remove":0,"operation":"plan"},"type":"change_summary"}
{"@level":"info","@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Creating...","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:00.471909Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]","module":"module.fleet_eu_west_2","resource":"aws_instance.injector[0]","implied_provider":"aws","resource_type":"aws_instance","resource_name":"injector","resource_key":0},"action":"create"},"type":"apply_start"}
{"@level":"info","@message":"module.fleet_us_east_1.aws_key_pair.injector: Creation errored after 0s","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:00.335650Z","hook":{"resource":{"addr":"module.fleet_us_east_1.aws_key_pair.injector","module":"module.fleet_us_east_1","resource":"aws_key_pair.injector","implied_provider":"aws","resource_type":"aws_key_pair","resource_name":"injector","resource_key":null},"action":"create","elapsed_seconds":0},"type":"apply_errored"}
{"@level":"info","@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Still creating... [10s elapsed]","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.470000Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]","module":"module.fleet_eu_west_2","resource":"aws_instance.injector[0]","implied_provider":"aws","resource_type":"aws_instance","resource_name":"injector","resource_key":0},"action":"create","elapsed_seconds":10},"type":"apply_progress"}
{"@level":"info","@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Creation complete after 11s [id=i-d3a851af943421418]","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.598088Z","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]","module":"module.fleet_eu_west_2","resource":"aws_instance.injector[0]","implied_provider":"aws","resource_type":"aws_instance","resource_name":"injector","resource_key":0},"action":"create","id_key":"id","id_value":"i-d3a851af943421418","elapsed_seconds":11},"type":"apply_complete"}
{"@level":"info","@message":"\nInterrupt received.\nPlease wait for Terraform to exit or data loss may occur.\nGracefully shutting down...\n","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.600000Z","type":"log"}
{"@level":"error","@message":"Error: importing EC2 Key Pair (spike-r1-us-east-1): operation error EC2: ImportKeyPair, https response error StatusCode: 400, api error InvalidKeyPair.Duplicate: The keypair 'spike-r1-us-east-1' already exists.","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.611245Z","diagnostic":{"severity":"error","summary":"importing EC2 Key Pair (spike-r1-us-east-1): operation error EC2: ImportKeyPair, https response error StatusCode: 400, api error InvalidKeyPair.Duplicate: The keypair 'spike-r1-us-east-1' already exists.","detail":"","address":"module.fleet_us_east_1.aws_key_pair.injector","range":{"filename":".terraform/modules/fleet_us_east_1/main.tf","start":{"line":24,"column":36,"byte":854},"end":{"line":24,"column":37,"byte":855}}},"type":"diagnostic"}
{"@level":"warn","@message":"Warning: Argument is deprecated","@module":"terraform.ui","@timestamp":"2026-11-26T11:40:10.611300Z","diagnostic":{"severity":"warning","summary":"Argument is deprecated","detail":"use something else","range":{"filename":".terraform/modules/fleet_eu_west_2/main.tf","start":{"line":1,"column":1,"byte":0},"end":{"line":1,"column":2,"byte":1}}},"type":"diagnostic"}
panic: something only printed as text
"""


def test_ui_stream_reports_each_line_with_its_region() -> None:
    stream = UiStream()
    events = [e for e in map(stream.feed, RECORDED_APPLY.splitlines()) if e is not None]
    triples = [(e.region, e.event, e.detail) for e in events]
    assert triples[0] == (ALL_REGIONS, "version", "Terraform 1.11.4")
    assert ("eu-west-2", "apply_start", "data.aws_ssm_parameter.ami: Refreshing...") in triples
    assert ("us-east-1", "planned_change", "aws_key_pair.injector: Plan to create") in triples
    assert (ALL_REGIONS, "change_summary", "Plan: 7 to add, 0 to change, 0 to destroy.") in triples
    assert (
        "eu-west-2",
        "apply_progress",
        "aws_instance.injector[0]: Still creating... [10s elapsed]",
    ) in triples
    assert (
        "eu-west-2",
        "apply_complete",
        "aws_instance.injector[0]: Creation complete after 11s [id=i-d3a851af943421418]",
    ) in triples
    assert ("us-east-1", "apply_errored", "aws_key_pair.injector: Creation errored after 0s") in triples
    # multi-line messages become one line; plain text is kept as a log event
    assert (
        ALL_REGIONS,
        "log",
        "Interrupt received. Please wait for Terraform to exit or data loss may occur. Gracefully shutting down...",
    ) in triples
    assert triples[-1] == (ALL_REGIONS, "log", "panic: something only printed as text")
    # diagnostics: the error is kept with its region, the warning is reported but not kept
    diagnostics = [t for t in triples if t[1] == "diagnostic"]
    assert diagnostics[0][0] == "us-east-1" and "InvalidKeyPair.Duplicate" in diagnostics[0][2]
    assert diagnostics[1] == (
        "eu-west-2",
        "diagnostic",
        "warning: Argument is deprecated: use something else",
    )
    assert [d.region for d in stream.diagnostics] == ["us-east-1"]
    assert stream.failed_regions() == ["us-east-1"]
    assert stream.summary == "Plan: 7 to add, 0 to change, 0 to destroy."
    hook = next(e for e in events if e.event == "apply_start" and "aws_instance" in e.detail)
    assert (hook.address, hook.action) == ("module.fleet_eu_west_2.aws_instance.injector[0]", "create")


def test_ui_stream_finds_the_region_of_a_diagnostic_without_address() -> None:
    stream = UiStream()
    line = json.dumps(
        {
            "type": "diagnostic",
            "@message": "Error: Invalid value for variable",
            "diagnostic": {
                "severity": "error",
                "summary": "Invalid value for variable",
                "detail": "operator_cidr must not open SSH to the whole internet",
                "range": {"filename": ".terraform/modules/fleet_ap_south_1/variables.tf"},
            },
        }
    )
    event = stream.feed(line)
    assert event is not None and event.region == "ap-south-1"
    assert stream.failed_regions() == ["ap-south-1"]
    assert stream.feed("   ") is None


# -- resource counts -------------------------------------------------------------------------------------

# Recorded from `terraform destroy -json` (Terraform 1.11, hashicorp/aws 5.x) against moto, trimmed
# to the fields spike reads: 7 resources planned in two regions, one instance in each destroyed.
RECORDED_DESTROY = r"""{"@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Plan to delete","change":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]"},"action":"delete"},"type":"planned_change"}
{"@message":"module.fleet_eu_west_2.aws_instance.injector[1]: Plan to delete","change":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[1]"},"action":"delete"},"type":"planned_change"}
{"@message":"module.fleet_eu_west_2.aws_key_pair.injector: Plan to delete","change":{"resource":{"addr":"module.fleet_eu_west_2.aws_key_pair.injector"},"action":"delete"},"type":"planned_change"}
{"@message":"module.fleet_eu_west_2.aws_security_group.injector: Plan to delete","change":{"resource":{"addr":"module.fleet_eu_west_2.aws_security_group.injector"},"action":"delete"},"type":"planned_change"}
{"@message":"module.fleet_us_east_1.aws_instance.injector[0]: Plan to delete","change":{"resource":{"addr":"module.fleet_us_east_1.aws_instance.injector[0]"},"action":"delete"},"type":"planned_change"}
{"@message":"module.fleet_us_east_1.aws_security_group.injector: Plan to delete","change":{"resource":{"addr":"module.fleet_us_east_1.aws_security_group.injector"},"action":"delete"},"type":"planned_change"}
{"@message":"module.fleet_us_east_1.aws_key_pair.injector: Plan to delete","change":{"resource":{"addr":"module.fleet_us_east_1.aws_key_pair.injector"},"action":"delete"},"type":"planned_change"}
{"@message":"Plan: 0 to add, 0 to change, 7 to destroy.","changes":{"add":0,"change":0,"import":0,"remove":7,"operation":"plan"},"type":"change_summary"}
{"@message":"module.fleet_us_east_1.aws_instance.injector[0]: Destroying... [id=i-9e2aec71d00db9b92]","hook":{"resource":{"addr":"module.fleet_us_east_1.aws_instance.injector[0]"},"action":"delete","id_key":"id","id_value":"i-9e2aec71d00db9b92"},"type":"apply_start"}
{"@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Destroying... [id=i-74874fea29cda645f]","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]"},"action":"delete","id_key":"id","id_value":"i-74874fea29cda645f"},"type":"apply_start"}
{"@message":"module.fleet_us_east_1.aws_instance.injector[0]: Destruction complete after 10s","hook":{"resource":{"addr":"module.fleet_us_east_1.aws_instance.injector[0]"},"action":"delete","elapsed_seconds":10},"type":"apply_complete"}
{"@message":"module.fleet_us_east_1.aws_key_pair.injector: Destroying... [id=spike-live-1-us-east-1]","hook":{"resource":{"addr":"module.fleet_us_east_1.aws_key_pair.injector"},"action":"delete","id_key":"id","id_value":"spike-live-1-us-east-1"},"type":"apply_start"}
{"@message":"module.fleet_eu_west_2.aws_instance.injector[0]: Destruction complete after 10s","hook":{"resource":{"addr":"module.fleet_eu_west_2.aws_instance.injector[0]"},"action":"delete","elapsed_seconds":10},"type":"apply_complete"}
{"@message":"Destroy complete! Resources: 7 destroyed.","changes":{"add":0,"change":0,"import":0,"remove":7,"operation":"destroy"},"type":"change_summary"}
"""


def test_the_tally_counts_an_apply_per_region() -> None:
    stream, tally = UiStream(), ResourceTally("apply")
    assert tally.report(3.2) == [(ALL_REGIONS, "planning (3 s)")]
    completed = []
    for line in RECORDED_APPLY.splitlines():
        event = stream.feed(line)
        if event is not None and tally.feed(event):
            completed.append(event.detail)
    assert completed == ["Plan: 7 to add, 0 to change, 0 to destroy."]
    # the recorded plan lists one planned create (us-east-1's key pair), then eu-west-2 creates an
    # instance (planned_change lines of the other resources were trimmed) and us-east-1's key errs
    assert tally.report(25.4) == [
        ("eu-west-2", "1/0 created (25 s)"),
        ("us-east-1", "0/1 created, 1 failed (25 s)"),
    ]
    # a data source read is no resource, and an update counts in neither apply nor destroy
    read = stream.feed(RECORDED_APPLY.splitlines()[1])
    assert read is not None and read.action == "read" and not tally.feed(read)


def test_the_tally_counts_a_destroy_per_region() -> None:
    stream, tally = UiStream(), ResourceTally("destroy")
    reports = []
    for line in RECORDED_DESTROY.splitlines():
        event = stream.feed(line)
        if event is not None and tally.feed(event):
            reports.append(tally.report(4.0))
    assert reports == [[("eu-west-2", "0/4 destroyed (4 s)"), ("us-east-1", "0/3 destroyed (4 s)")]]
    assert tally.report(43.5) == [
        ("eu-west-2", "1/4 destroyed (43 s)"),
        ("us-east-1", "1/3 destroyed (43 s)"),
    ]


def test_a_plan_with_nothing_to_do_says_so() -> None:
    tally = ResourceTally("destroy")
    summary = UiStream().feed(
        json.dumps({"type": "change_summary", "@message": "Plan: 0 to add, 0 to change, 0 to destroy."})
    )
    assert summary is not None and tally.feed(summary)
    assert tally.report(1.0) == [(ALL_REGIONS, "0/0 destroyed: nothing to change (1 s)")]
    with pytest.raises(ValueError, match="valid verbs are apply and destroy"):
        ResourceTally("init")
