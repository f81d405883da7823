"""The `java ... io.gatling.app.Gatling` commands spike runs (built, not run, here)."""

from __future__ import annotations

import base64
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadorch.engine.gatling.build import CompiledSimulation
from loadorch.errors import BadInputError
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

JVM_OPTIONS_ENV = "SPIKE_JVM_OPTIONS"
# what spike itself decides on the command line: replacing it would break the run, not tune it
_RESERVED_OPTIONS = frozenset({"-cp", "-classpath", "--class-path", "-jar"})
_RESERVED_PREFIXES = ("-Xms", "-Xmx", "-D")


def parse_jvm_options(text: str, where: str = JVM_OPTIONS_ENV) -> tuple[str, ...]:
    """Extra JVM options for every Gatling JVM (injectors and the report), split as a shell would.

    Tuning only (`-XX:...`, `-Xss...`): the classpath, the heap (the profile's `injector.heap_mb`)
    and system properties are spike's, and are refused here.
    """
    try:
        options = tuple(shlex.split(text))
    except ValueError as exc:
        raise BadInputError(
            f"cannot split the JVM options {text!r}: {exc}", where=where, fix="quote them as a shell would"
        ) from exc
    for option in options:
        if not option.startswith("-"):
            raise BadInputError(
                f"{option!r} is not a JVM option",
                where=where,
                fix="give options only, e.g. -XX:TieredStopAtLevel=1",
            )
        if option in _RESERVED_OPTIONS or option.startswith(_RESERVED_PREFIXES):
            raise BadInputError(
                f"JVM option {option!r} is spike's to set",
                where=where,
                fix="keep to tuning options such as -XX:TieredStopAtLevel=1; the heap is the profile's "
                "injector.heap_mb",
            )
    return options


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
    jvm_options: Sequence[str] = (),
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
        *jvm_options,
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
    classpath: str,
    results_dir: Path,
    folder: str,
    *,
    java: str = "java",
    heap_mb: int = 2048,
    jvm_options: Sequence[str] = (),
) -> Command:
    """Gatling's reports-only mode over `results_dir/folder`, which holds every injector's log."""
    argv = (
        java,
        f"-Xmx{heap_mb}m",
        *JVM_OPTIONS,
        *jvm_options,
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
