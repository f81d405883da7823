"""Where spike keeps things on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """$SPIKE_HOME, else $XDG_CACHE_HOME/spike, else ~/.cache/spike."""
    if os.environ.get("SPIKE_HOME"):
        return Path(os.environ["SPIKE_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spike"


def build_cache_dir() -> Path:
    return state_dir() / "gatling-builds"


def maven_repository() -> Path:
    return Path(os.environ.get("SPIKE_MAVEN_REPO", str(Path.home() / ".m2" / "repository")))
