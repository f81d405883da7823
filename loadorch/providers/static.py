"""The static provider: existing SSH hosts from an inventory file are the injectors.

Nothing is created or destroyed; spike's cache on each host persists between runs (so Gatling's
jars travel once), and every process spike started is stopped at teardown.
"""

from __future__ import annotations

from pathlib import Path

from loadorch.errors import BadInputError
from loadorch.plan.model import Plan
from loadorch.providers.inventory import Inventory, check_key_files, key_path, read_inventory
from loadorch.providers.remote import RemoteHost, SshFleetProvider
from loadorch.transport.hostkeys import fingerprint_of_public_key_line
from loadorch.transport.ssh import SshHost


class StaticProvider(SshFleetProvider):
    name = "static"

    def __init__(self, inventory_path: Path, *, cache_dir: Path, **kwargs: float) -> None:
        super().__init__(cache_dir=cache_dir, **kwargs)
        self.inventory_path = inventory_path
        self.inventory: Inventory
        self.inventory, self._positions = read_inventory(inventory_path)

    def preflight(self) -> None:
        """Cheap checks before anything is built or written: every host's key file holds a private key."""
        check_key_files(self.inventory_path, self.inventory, self._positions)

    def regions(self) -> tuple[str, ...]:
        """The region labels of the inventory, in file order."""
        return tuple(dict.fromkeys(h.region for h in self.inventory.hosts))

    def check_plan(self, plan: Plan) -> tuple[str, ...]:
        """Every region of the plan has enough hosts; said before anything connects."""
        for region in plan.regions:
            have = [h for h in self.inventory.hosts if h.region == region.name]
            if len(have) < len(region.injectors):
                raise BadInputError(
                    f"region {region.name!r} needs {len(region.injectors)} injector(s); "
                    f"the inventory has {len(have)} host(s) labelled {region.name!r}",
                    where=str(self.inventory_path),
                    fix="add hosts with that region label, pick --regions from the inventory's labels "
                    f"({', '.join(self.regions())}), or raise injector.max_rate_per_s in the profile",
                )
        return ()

    def recovery_details(self) -> dict[str, object]:
        """The inventory recovery reaches the hosts through again."""
        return {"inventory": str(self.inventory_path)}

    def _hosts(self, plan: Plan, run_dir: Path) -> dict[str, RemoteHost]:
        self.check_plan(plan)
        defaults = self.inventory.defaults
        hosts: dict[str, RemoteHost] = {}
        for region in plan.regions:
            entries = [h for h in self.inventory.hosts if h.region == region.name]
            for injector, entry in zip(region.injectors, entries, strict=False):
                pinned = entry.host_key
                fingerprint = (
                    pinned if pinned.startswith("SHA256:") else fingerprint_of_public_key_line(pinned)
                )
                hosts[injector.id] = RemoteHost(
                    ssh=SshHost(
                        name=injector.id,
                        address=entry.host,
                        port=entry.port or defaults.port,
                        user=entry.user or defaults.user,
                        key_path=key_path(self.inventory_path, entry.key or defaults.key or ""),
                        host_key_fingerprints=(fingerprint,),
                    ),
                    region=region.name,
                    base_dir=entry.base_dir or defaults.base_dir,
                    java=entry.java or defaults.java,
                    python=entry.python or defaults.python,
                )
        return hosts
