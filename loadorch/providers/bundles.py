"""Deploy bundles: a tar per kind of artifact (jars, compiled simulation, feeders, agent), named by
the digest of its content, so that a host that already holds a digest is never sent it again.

Pure file work in spike's build cache (`<cache>/bundles/<kind>-<digest>.tar`); nothing remote.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tarfile
from collections.abc import Iterable
from pathlib import Path


def tar_bundle(cache_dir: Path, kind: str, files: Iterable[tuple[str, Path]]) -> tuple[Path, str]:
    """A tar of `files` (name in the archive, local file), named by the digest of their content."""
    entries = sorted(files)
    digest = hashlib.sha256()
    for name, path in entries:
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    key = digest.hexdigest()[:20]
    return write_tar(cache_dir, kind, key, entries), key


def tar_tree(cache_dir: Path, kind: str, root: Path, key: str) -> tuple[Path, str]:
    """A tar of the tree under `root`, named by a digest the caller already knows (the build key)."""
    entries = sorted((str(p.relative_to(root)), p) for p in root.rglob("*") if p.is_file())
    return write_tar(cache_dir, kind, key, entries), key


def write_tar(cache_dir: Path, kind: str, key: str, entries: list[tuple[str, Path]]) -> Path:
    path = cache_dir / "bundles" / f"{kind}-{key}.tar"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: runs started at once (one build cache) may write the same bundle together;
    # each renames a complete tar over the other's, which holds the same content
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # jars are compressed already: a plain tar is as small and much faster to make and unpack
        with tarfile.open(tmp, "w") as archive:
            for name, file in entries:
                archive.add(file, arcname=name, recursive=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
