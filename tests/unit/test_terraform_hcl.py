"""The HCL writer: exact text for each kind of value, escapes that keep values literal, refusals.

That Terraform reads the text back as the same values is checked with Terraform itself in
tests/integration/test_terraform_hcl_roundtrip.py.
"""

from __future__ import annotations

import pytest

from loadorch.providers.terraform.hcl import Block, Ref, render, string


def test_blocks_attributes_and_nested_blocks_as_terraform_fmt_writes_them() -> None:
    doc = (
        Block("terraform", attributes={"required_version": ">= 1.9.0"}),
        Block(
            "provider",
            ("aws",),
            {"alias": "eu-west-2", "skip_region_validation": True},
            (Block("assume_role", attributes={"role_arn": "arn:aws:iam::111122223333:role/x"}),),
        ),
        Block(
            "module",
            ("fleet",),
            {
                "source": "/opt/m",
                "providers": {"aws": Ref("aws.eu-west-2")},
                "count": 2,
                "ports": [443, 80],
                "none": None,
                "empty": {},
                "tags": {"ManagedBy": "spike", "aws:x": "y", "null": "kept"},
            },
        ),
        Block("locals"),
    )
    assert render(doc) == (
        "terraform {\n"
        '  required_version = ">= 1.9.0"\n'
        "}\n"
        "\n"
        'provider "aws" {\n'
        '  alias                  = "eu-west-2"\n'
        "  skip_region_validation = true\n"
        "\n"
        "  assume_role {\n"
        '    role_arn = "arn:aws:iam::111122223333:role/x"\n'
        "  }\n"
        "}\n"
        "\n"
        'module "fleet" {\n'
        '  source = "/opt/m"\n'
        "  providers = {\n"
        "    aws = aws.eu-west-2\n"
        "  }\n"
        "  count = 2\n"
        "  ports = [443, 80]\n"
        "  none  = null\n"
        "  empty = {}\n"
        "  tags = {\n"
        '    ManagedBy = "spike"\n'
        '    "aws:x"   = "y"\n'
        '    "null"    = "kept"\n'
        "  }\n"
        "}\n"
        "\n"
        "locals {}\n"
    )


def test_lists_of_objects_break_over_lines() -> None:
    text = render((Block("locals", attributes={"rules": [{"port": 443}, {"port": 80}]}),))
    assert text == (
        "locals {\n  rules = [\n    {\n      port = 443\n    },\n    {\n      port = 80\n    },\n  ]\n}\n"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", '"plain"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("two\nlines\ttab", r'"two\nlines\ttab"'),
        ("${var.secret}", '"$${var.secret}"'),  # never interpolated
        ("%{ if true }x%{ endif }", '"%%{ if true }x%%{ endif }"'),  # never a template directive
        ("$5 and 100%", '"$5 and 100%"'),  # lone $ and % stay as they are
        ("héllo ✓", '"héllo ✓"'),
    ],
)
def test_strings_are_quoted_and_never_interpolated(value: str, text: str) -> None:
    assert string(value) == text


def test_what_is_not_hcl_is_refused() -> None:
    with pytest.raises(ValueError, match="not a reference"):
        Ref("module.x; rm -rf /")
    with pytest.raises(ValueError, match="not a reference"):
        Ref("single")
    with pytest.raises(ValueError, match="not an HCL identifier"):
        Block("module", ("x",), {"bad name": 1})
    with pytest.raises(ValueError, match="not an HCL identifier"):
        Block("1st")


def test_nested_blocks_are_found_by_type_and_labels() -> None:
    inner = Block("endpoints", attributes={"ec2": "http://127.0.0.1:5000"})
    outer = Block("provider", ("aws",), blocks=(inner,))
    assert outer.block("endpoints") is inner
    with pytest.raises(KeyError):
        outer.block("assume_role")
