"""The tags spike puts on every cloud resource it creates, and reads back to find them.

They are the contract between Terraform (which writes them), the post-destroy
check and `spike reap` (which search by them, also when local state is lost).
"""

from __future__ import annotations

MANAGED_BY = "ManagedBy"
MANAGED_BY_VALUE = "spike"
RUN_ID = "SpikeRunId"
OWNER = "SpikeOwner"
EXPIRES_AT = "SpikeExpiresAt"  # RFC 3339, UTC, whole seconds: 2026-11-26T14:05:00Z
REGION_LABEL = "SpikeRegion"


def run_tags(run_id: str, owner: str, expires_at: str, region: str) -> dict[str, str]:
    """Every tag a run's resource carries in `region`."""
    return {
        MANAGED_BY: MANAGED_BY_VALUE,
        RUN_ID: run_id,
        OWNER: owner,
        EXPIRES_AT: expires_at,
        REGION_LABEL: region,
    }
