"""What the run benchmarks share: a two-region profile over the sample target, and a roomy target."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from loadorch.target.server import TargetConfig, TargetServer

REPO = Path(__file__).resolve().parents[1]


def write_bench_profile(
    name: str, shape_yaml: str, *, baseline: float, per_injector_rate: float, requests_per_user: int = 1
) -> Path:
    """A profile in a fresh temporary directory: 2 region labels, one injector each, feed and post reads."""
    work = Path(tempfile.mkdtemp(prefix=f"spike-{name}-"))
    shutil.copyfile(REPO / "loadorch/profiles/builtin/posts.csv", work / "posts.csv")
    path = work / f"{name}.yaml"
    path.write_text(
        f"""\
name: {name}
target:
  base_url: http://127.0.0.1:1
baseline_rate_per_s: {baseline}
shape:
{shape_yaml.rstrip()}
scenario:
  requests_per_user: {requests_per_user}
  requests:
    - {{name: read_feed, path: "/feed?page=1", weight: 3}}
    - {{name: read_post, path: "/posts/{{post_id}}", weight: 1}}
  feeders:
    - {{name: posts, file: posts.csv}}
regions:
  - {{name: eu-west-2}}
  - {{name: us-east-1}}
injector:
  max_rate_per_s: {per_injector_rate}
  heap_mb: 1024
"""
    )
    return path


def roomy_target() -> TargetServer:
    """The sample target with room for any load here: the benchmarks measure spike, not its limits."""
    return TargetServer(
        TargetConfig(port=0, capacity=100_000, service_time_ms=0, queue_timeout_ms=10_000)
    ).start()
