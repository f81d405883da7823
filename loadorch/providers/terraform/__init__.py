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
    AssumeRole,
    FleetSpec,
    RegionFleet,
    injector_fleet_module,
    module_name,
    render_root_config,
    role_session_name,
    root_config,
    session_name_for,
    target_ports_for,
    validate_spec,
)
from loadorch.providers.terraform.hardening import terraform_env
from loadorch.providers.terraform.inventory import FleetHost, Inventory, RegionInventory, parse_inventory
from loadorch.providers.terraform.runner import (
    TerraformApplyError,
    TerraformRun,
    TerraformWorkspace,
)
from loadorch.providers.terraform.ui import ALL_REGIONS, RESOURCES_EVENT, ResourceTally, UiEvent, UiStream

__all__ = [
    "ALL_REGIONS",
    "AWS_REGIONS",
    "RESOURCES_EVENT",
    "AssumeRole",
    "FleetHost",
    "FleetSpec",
    "Inventory",
    "RegionFleet",
    "RegionInventory",
    "ResourceTally",
    "TerraformApplyError",
    "TerraformRun",
    "TerraformWorkspace",
    "UiEvent",
    "UiStream",
    "injector_fleet_module",
    "module_name",
    "parse_inventory",
    "render_root_config",
    "role_session_name",
    "root_config",
    "session_name_for",
    "target_ports_for",
    "terraform_env",
    "validate_spec",
]
