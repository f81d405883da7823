"""A small writer of Terraform's native syntax (HCL), for the root configuration spike generates.

Pure: blocks in, text out. Only what a root configuration needs: blocks with labels, attributes
whose values are strings, whole numbers, booleans, null, lists, objects and references
(`aws.eu-west-2`, `module.fleet_eu_west_2`). The text is what `terraform fmt` would leave alone
(two-space indentation, aligned `=` in a run of one-line attributes), so that it reads like the
hand-written examples and diffs between runs stay small.

Why not `main.tf.json`: checkov's Terraform runner does not load `.tf.json` files from a
directory, and cannot follow the modules a JSON file calls, so a JSON root configuration could
not be scanned (checked with checkov 3.3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# A reference as the root configuration uses them: names joined by dots, no operators or calls.
_REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)+$")
_INDENT = "  "
# Words an object key cannot be without quotes.
_KEYWORDS = frozenset({"true", "false", "null", "for", "in", "if"})


@dataclass(frozen=True)
class Ref:
    """A reference written as is, not quoted: `aws.eu-west-2`, `module.fleet_eu_west_2`."""

    expression: str

    def __post_init__(self) -> None:
        if not _REFERENCE.match(self.expression):
            raise ValueError(f"{self.expression!r} is not a reference such as module.fleet_eu_west_2")


Value = str | int | bool | None | Ref | Sequence["Value"] | Mapping[str, "Value"]


@dataclass(frozen=True)
class Block:
    """`type "label" ... { attributes, then nested blocks }`, attributes in the order given."""

    type: str
    labels: tuple[str, ...] = ()
    attributes: Mapping[str, Value] = field(default_factory=dict)
    blocks: tuple[Block, ...] = ()

    def __post_init__(self) -> None:
        for name in (self.type, *self.attributes):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not an HCL identifier")

    def block(self, type_: str, *labels: str) -> Block:
        """The nested block of this type and labels (KeyError if there is none)."""
        for child in self.blocks:
            if child.type == type_ and child.labels == labels:
                return child
        raise KeyError((type_, *labels))


def render(blocks: Sequence[Block]) -> str:
    """The text of a file made of `blocks`, one blank line between them."""
    return "\n".join(_block(block, 0) for block in blocks)


def string(text: str) -> str:
    """A quoted HCL string: JSON's escapes, and `${` / `%{` escaped so nothing is interpolated."""
    quoted = json.dumps(text, ensure_ascii=False)
    return quoted.replace("${", "$${").replace("%{", "%%{")


def _block(block: Block, depth: int) -> str:
    pad = _INDENT * depth
    head = " ".join([block.type, *(string(label) for label in block.labels)])
    parts: list[str] = []
    if block.attributes:
        parts.append(_attributes(block.attributes, depth + 1))
    parts += [_block(child, depth + 1) for child in block.blocks]
    if not parts:
        return f"{pad}{head} {{}}\n"
    return f"{pad}{head} {{\n" + "\n".join(parts) + f"{pad}}}\n"


def _attributes(attributes: Mapping[str, Value], depth: int) -> str:
    return _assignments([(name, _value(value, depth)) for name, value in attributes.items()], depth)


def _assignments(items: list[tuple[str, str]], depth: int) -> str:
    """`name = value` lines; the `=` of one-line values next to each other are aligned, as fmt does."""
    pad = _INDENT * depth
    lines: list[str] = []
    group: list[tuple[str, str]] = []

    def flush() -> None:
        width = max((len(name) for name, _ in group), default=0)
        lines.extend(f"{pad}{name.ljust(width)} = {text}" for name, text in group)
        group.clear()

    for name, text in items:
        if "\n" in text:
            flush()
            lines.append(f"{pad}{name} = {text}")
        else:
            group.append((name, text))
    flush()
    return "".join(line + "\n" for line in lines)


def _key(name: str) -> str:
    # A bare identifier is taken literally as an object key (and `providers` needs bare names).
    return name if _IDENTIFIER.match(name) and name not in _KEYWORDS else string(name)


def _value(value: Value, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, Ref):
        return value.expression
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        pad = _INDENT * depth
        keys = [(_key(str(key)), _value(item, depth + 1)) for key, item in value.items()]
        return "{\n" + _assignments(keys, depth + 1) + pad + "}"
    items = [_value(item, depth + 1) for item in value]
    if not any("\n" in item for item in items):
        return "[" + ", ".join(items) + "]"
    pad = _INDENT * (depth + 1)
    return "[\n" + "".join(f"{pad}{item},\n" for item in items) + _INDENT * depth + "]"
