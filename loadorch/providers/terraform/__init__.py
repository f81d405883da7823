"""Terraform for the `aws` provider: the root configuration, the workspace that runs it, the inventory.

spec = FleetSpec(run_id=..., regions=(RegionFleet("eu-west-2", 2),), ...)
workspace = TerraformWorkspace(run_dir / "terraform", env=credentials)
workspace.write_config(spec)
workspace.init()
try:
    workspace.apply(progress)
    hosts = workspace.inventory().hosts
    ...
finally:
    workspace.destroy(progress)
"""

from loadorch.providers.terraform.config import (
    AWS_REGIONS,
    FleetSpec,
    RegionFleet,
    injector_fleet_module,
    module_name,
    render_root_config,
    root_config,
    validate_spec,
)
from loadorch.providers.terraform.inventory import FleetHost, Inventory, RegionInventory, parse_inventory
from loadorch.providers.terraform.runner import (
    ALL_REGIONS,
    TerraformApplyError,
    TerraformRun,
    TerraformWorkspace,
    UiEvent,
    UiStream,
)

__all__ = [
    "ALL_REGIONS",
    "AWS_REGIONS",
    "FleetHost",
    "FleetSpec",
    "Inventory",
    "RegionFleet",
    "RegionInventory",
    "TerraformApplyError",
    "TerraformRun",
    "TerraformWorkspace",
    "UiEvent",
    "UiStream",
    "injector_fleet_module",
    "module_name",
    "parse_inventory",
    "render_root_config",
    "root_config",
    "validate_spec",
]
