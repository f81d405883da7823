"""Atomic file writes: a reader (or a crash) sees the old content or the new, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    `mode` sets the permissions before the rename (e.g. 0o600 for state that may be sensitive).
    `durable=False` skips the fsync, for files rewritten every second whose last copy is enough.
    A failure (a full disk) leaves `path` as it was and no temporary file behind.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with _suppress_os():
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    """JSON with sorted keys and a final newline, written atomically."""
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


class _suppress_os:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], OSError)
