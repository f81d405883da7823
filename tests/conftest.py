"""Shared by every tier.

- `tests/fakes/` (stand-ins for what cannot run here, e.g. Grafana) is importable.
- Terminal width is fixed, so tables render the same under any terminal or CI log
  (rich reads COLUMNS when its consoles are created at import).
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ["COLUMNS"] = "120"
sys.path.insert(0, str(Path(__file__).parent / "fakes"))

# Runs started through the CLI record themselves in the run history: never in the user's own.
os.environ["SPIKE_HISTORY_DB"] = str(Path(tempfile.mkdtemp(prefix="spike-test-history-")) / "history.sqlite")
