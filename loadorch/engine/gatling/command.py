"""The `java ... io.gatling.app.Gatling` commands spike runs (built, not run, here)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

from loadorch.engine.gatling.build import CompiledSimulation
from loadorch.plan.model import InjectorPlan, Plan
from loadorch.process import Command

GATLING_MAIN = "io.gatling.app.Gatling"

# Settings every injector gets. Analytics and the default warm-up both call
# hosts on the internet; spike only ever talks to the validated target.
SAFE_GATLING_PROPERTIES: Mapping[str, str] = {
    "gatling.data.enableAnalytics": "false",
    "gatling.http.warmUpUrl": "",
    "gatling.data.console.writePeriod": "5",
}

JVM_OPTIONS = (
    "-server",
    "-XX:+UseParallelGC",
    "-XX:MaxInlineLevel=20",
    "-XX:MaxTrivialSize=12",
    "-XX:+HeapDumpOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
)


def injector_command(
    compiled: CompiledSimulation,
    plan: Plan,
    injector: InjectorPlan,
    *,
    results_dir: Path | str,
    feeders: Mapping[str, str],
    heap_mb: int = 512,
    java: str = "java",
    extra_properties: Mapping[str, str] | None = None,
    classpath: str | None = None,
    start_at_ms: int | None = None,
) -> Command:
    """One injector's Gatling run: its shard of the curve, the shared start, no HTML report.

    `classpath` and `results_dir` are paths on the injector (default: this machine's build cache).
    `start_at_ms` is the shared start instant read on the injector's own clock (default: the plan's),
    so a measured clock offset can be compensated.
    """
    properties = {
        **SAFE_GATLING_PROPERTIES,
        **(extra_properties or {}),
        # the warm-up request exercises the HTTP stack before the start gate, so the first real
        # request is not the one paying for class loading (the target is validated; nothing else)
        "gatling.http.warmUpUrl": plan.base_url,
        "spike.baseUrl": plan.base_url,
        "spike.injector": injector.id,
        "spike.startAtMs": str(plan.start_at_ms if start_at_ms is None else start_at_ms),
        "spike.curve": injector.curve.encode(),
        **{f"spike.feeder.{name}": path for name, path in sorted(feeders.items())},
    }
    description = base64.b64encode(f"{plan.run_id} {injector.id}".encode()).decode()
    argv = (
        java,
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        *JVM_OPTIONS,
        "-cp",
        compiled.classpath() if classpath is None else classpath,
        *(f"-D{k}={v}" for k, v in properties.items()),
        GATLING_MAIN,
        "-s",
        compiled.simulation_class,
        "-rf",
        str(results_dir),
        "-rd",
        description,
        "-nr",
        "-l",
        "spike",
    )
    return Command(argv)


def reports_only_command(
    classpath: str, results_dir: Path, folder: str, *, java: str = "java", heap_mb: int = 2048
) -> Command:
    """Gatling's reports-only mode over `results_dir/folder`, which holds every injector's log."""
    argv = (
        java,
        f"-Xmx{heap_mb}m",
        *JVM_OPTIONS,
        "-cp",
        classpath,
        *(f"-D{k}={v}" for k, v in SAFE_GATLING_PROPERTIES.items()),
        GATLING_MAIN,
        "-rf",
        str(results_dir),
        "-ro",
        folder,
        "-l",
        "spike",
    )
    return Command(argv)
