"""Shared by every tier: `tests/fakes/` (stand-ins for what cannot run here, e.g. Grafana) is importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
