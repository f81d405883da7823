"""The injectors a Terraform apply created, read from `terraform output -json`.

The root configuration has one output, `fleets`: region code -> that region's injector-fleet
module outputs (instance_ids, public_ips, private_ips, public_dns, security_group_id, key_name,
ami_id, ssh_user), each list in injector order. ssh_user is optional: states written before the
module had it lack it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadorch.errors import InfrastructureError
from loadorch.providers.terraform.config import FLEETS_OUTPUT

_HOST_LISTS = ("instance_ids", "public_ips", "private_ips", "public_dns")


@dataclass(frozen=True)
class FleetHost:
    """One injector instance. `index` starts at 1, so `injector_id` matches the plan's ids."""

    region: str
    index: int
    instance_id: str
    public_ip: str
    private_ip: str
    public_dns: str

    @property
    def injector_id(self) -> str:
        return f"{self.region}-{self.index}"

    @property
    def address(self) -> str:
        """Where to connect: the public IP, else the public DNS name, else the private IP."""
        return self.public_ip or self.public_dns or self.private_ip


@dataclass(frozen=True)
class RegionInventory:
    """What exists in one region: its hosts, the shared resources they use, the login user."""

    region: str
    security_group_id: str
    key_name: str
    ami_id: str
    hosts: tuple[FleetHost, ...]
    ssh_user: str = ""  # "" where the state predates the module's ssh_user output


@dataclass(frozen=True)
class Inventory:
    """Every injector of a run, region by region in the order Terraform reported them."""

    regions: tuple[RegionInventory, ...]

    @property
    def hosts(self) -> tuple[FleetHost, ...]:
        return tuple(host for region in self.regions for host in region.hosts)

    def region(self, name: str) -> RegionInventory:
        for region in self.regions:
            if region.region == name:
                return region
        raise KeyError(name)


def parse_inventory(output_json: str, *, where: str = "terraform output") -> Inventory:
    """An Inventory from the text `terraform output -json` printed."""
    try:
        outputs = json.loads(output_json)
    except json.JSONDecodeError as exc:
        raise InfrastructureError(f"terraform output is not JSON: {exc}", where=where) from exc
    if not isinstance(outputs, dict):
        raise InfrastructureError("terraform output is not a JSON object", where=where)
    return inventory_from_outputs(outputs, where=where)


def inventory_from_outputs(outputs: Mapping[str, Any], *, where: str = "terraform output") -> Inventory:
    """An Inventory from parsed `terraform output -json` ({name: {"value": ...}})."""
    if FLEETS_OUTPUT not in outputs:
        present = ", ".join(sorted(outputs)) or "none"
        raise InfrastructureError(
            f"terraform has no {FLEETS_OUTPUT!r} output (outputs present: {present})",
            where=where,
            fix="apply the workspace first; if apply failed or was interrupted, destroy it and start again",
        )
    fleets = outputs[FLEETS_OUTPUT].get("value") if isinstance(outputs[FLEETS_OUTPUT], Mapping) else None
    if not isinstance(fleets, Mapping):
        raise InfrastructureError(f"the {FLEETS_OUTPUT!r} output has no value object", where=where)
    return Inventory(tuple(_region(str(name), fleet, where) for name, fleet in fleets.items()))


def _region(region: str, fleet: Any, where: str) -> RegionInventory:
    if not isinstance(fleet, Mapping):
        raise InfrastructureError(f"{region}: the fleet output is not an object", where=where)
    missing = [key for key in (*_HOST_LISTS, "security_group_id", "key_name", "ami_id") if key not in fleet]
    if missing:
        raise InfrastructureError(
            f"{region}: the fleet output lacks {', '.join(missing)}",
            where=where,
            fix="the injector-fleet module and spike disagree: re-run `terraform init` with this spike's module",
        )
    lists = {key: list(fleet[key] or []) for key in _HOST_LISTS}
    counts = {key: len(values) for key, values in lists.items()}
    if len(set(counts.values())) != 1:
        raise InfrastructureError(f"{region}: the fleet output lists differ in length: {counts}", where=where)
    hosts = []
    for i, instance_id in enumerate(lists["instance_ids"]):
        if not instance_id:
            raise InfrastructureError(f"{region}: injector {i + 1} has no instance id", where=where)
        hosts.append(
            FleetHost(
                region=region,
                index=i + 1,
                instance_id=str(instance_id),
                public_ip=str(lists["public_ips"][i] or ""),
                private_ip=str(lists["private_ips"][i] or ""),
                public_dns=str(lists["public_dns"][i] or ""),
            )
        )
    return RegionInventory(
        region=region,
        security_group_id=str(fleet["security_group_id"]),
        key_name=str(fleet["key_name"]),
        ami_id=str(fleet["ami_id"]),
        hosts=tuple(hosts),
        ssh_user=str(fleet.get("ssh_user") or ""),
    )
