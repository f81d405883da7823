"""The agent as one file for remote injectors: a zipapp that runs on a stock Python 3.

A remote injector has Python 3 but none of spike's dependencies. The agent's modules need only
the standard library on Linux (health reads /proc), so spike ships exactly those modules in a
`.pyz` and runs it as `python3 spike-agent-<digest>.pyz --config agent.json`. The file is named
by its content, so an injector that already has it is never sent it again.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import loadorch
from loadorch.atomic import write_atomic

_PACKAGE = Path(loadorch.__file__).resolve().parent

# Everything `loadorch.agent.agent` imports when it runs without a sink (spike forwards the points).
MODULES = (
    "__init__.py",
    "errors.py",
    "agent/__init__.py",
    "agent/agent.py",
    "agent/graphite.py",
    "agent/health.py",
    "agent/spool.py",
    "metrics/__init__.py",
    "metrics/schema.py",
    "metrics/sink.py",
)

_MAIN = b"""import sys

from loadorch.agent.agent import main

sys.exit(main(sys.argv[1:]))
"""

# Fixed timestamps make the archive, and so its digest, depend on content only.
_EPOCH = (2020, 1, 1, 0, 0, 0)


def agent_zipapp_bytes(package: Path = _PACKAGE) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("__main__.py", _EPOCH), _MAIN)
        for name in MODULES:
            archive.writestr(zipfile.ZipInfo(f"loadorch/{name}", _EPOCH), (package / name).read_bytes())
    return b"#!/usr/bin/env python3\n" + buffer.getvalue()


def build_agent_zipapp(cache_dir: Path) -> Path:
    """`cache_dir/spike-agent-<digest>.pyz`, written once per distinct content."""
    data = agent_zipapp_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = cache_dir / f"spike-agent-{digest}.pyz"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    return path
