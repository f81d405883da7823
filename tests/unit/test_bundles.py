"""Deploy bundles: named by content, and safe to make from several runs at once."""

from __future__ import annotations

import multiprocessing
import tarfile
from pathlib import Path

from loadorch.providers.bundles import tar_bundle


def _make(args: tuple[str, str]) -> str:
    cache, src = args
    path, _ = tar_bundle(Path(cache), "libs", [(p.name, p) for p in sorted(Path(src).iterdir())])
    return str(path)


def test_runs_making_the_same_bundle_at_once_all_get_a_whole_tar(tmp_path: Path) -> None:
    src = tmp_path / "jars"
    src.mkdir()
    for i in range(20):
        (src / f"lib{i}.jar").write_bytes(bytes([i]) * 200_000)
    cache = tmp_path / "cache"
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        paths = pool.map(_make, [(str(cache), str(src))] * 12)
    assert len(set(paths)) == 1
    with tarfile.open(paths[0]) as archive:
        assert sorted(m.name for m in archive.getmembers()) == sorted(f"lib{i}.jar" for i in range(20))
    assert list((cache / "bundles").glob("*.tmp")) == []  # no half-written leftovers
