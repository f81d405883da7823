"""Compile a rendered simulation once per scenario, cached by content.

The build cache holds one directory per distinct (simulation source, Maven
project) pair: compiled classes plus the resolved Gatling classpath. An
unchanged scenario is never recompiled; a build happens in a temporary
directory and is renamed into place, so a crash never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loadorch.engine.gatling.render import CLASS_NAME, SIMULATION_CLASS
from loadorch.errors import BuildError
from loadorch.process import Command, run_command

GATLING_VERSION = "3.11.5"
DEFAULT_PROJECT = Path(__file__).resolve().parents[3] / "gatling"
BUILD_TIMEOUT_S = 900.0
_PROJECT_FILES = ("pom.xml", "src/test/resources/logback-test.xml")


@dataclass(frozen=True)
class CompiledSimulation:
    """A compiled simulation: its classes and the jars Gatling needs to run it."""

    key: str
    directory: Path
    simulation_class: str = SIMULATION_CLASS

    @property
    def classes_dir(self) -> Path:
        return self.directory / "target" / "test-classes"

    @property
    def dependency_jars(self) -> tuple[str, ...]:
        try:
            text = (self.directory / "classpath.txt").read_text().strip()
        except OSError:
            return ()
        return tuple(p for p in text.split(os.pathsep) if p)

    def classpath(self) -> str:
        return os.pathsep.join((str(self.classes_dir), *self.dependency_jars))

    @property
    def source_path(self) -> Path:
        return self.directory / "src" / "test" / "scala" / "spike" / f"{CLASS_NAME}.scala"


def gatling_project() -> Path:
    """The Maven project that pins Gatling (`gatling/` in the repository)."""
    return Path(os.environ.get("SPIKE_GATLING_PROJECT", DEFAULT_PROJECT))


def cache_key(source: str, project: Path) -> str:
    digest = hashlib.sha256(source.encode())
    for name in _PROJECT_FILES:
        digest.update(name.encode())
        digest.update((project / name).read_bytes())
    return digest.hexdigest()[:20]


# Maven's JVM for a build that lasts seconds: C1 only and the serial collector compile the same
# simulation in 8 s and 10 CPU s instead of 12 s and 20 (2 cores); $MAVEN_OPTS, when set, wins
MAVEN_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def maven_command(
    build_dir: Path, *, offline: bool = False, environ: Mapping[str, str] | None = None
) -> Command:
    argv = ["mvn", "-B", "-q"]
    if offline:
        argv.append("-o")
    argv += ["test-compile", "dependency:build-classpath"]
    maven_opts = (os.environ if environ is None else environ).get("MAVEN_OPTS", MAVEN_JVM_OPTIONS)
    return Command(tuple(argv), cwd=build_dir, env={"MAVEN_OPTS": maven_opts})


def cached_simulation(source: str, cache_dir: Path, project: Path | None = None) -> CompiledSimulation | None:
    """The compiled simulation if this exact source was built before, else None."""
    project = project or gatling_project()
    key = cache_key(source, project)
    compiled = CompiledSimulation(key, cache_dir / key)
    jars = compiled.dependency_jars
    if (compiled.directory / "ok").is_file() and jars and all(Path(j).is_file() for j in jars):
        return compiled
    return None


def compile_simulation(source: str, cache_dir: Path, project: Path | None = None) -> CompiledSimulation:
    """Compile `source` with Maven unless the cache already holds it."""
    project = project or gatling_project()
    if not (project / "pom.xml").is_file():
        raise BuildError(
            f"the Gatling Maven project is missing at {project}",
            fix="run spike from its repository checkout or set SPIKE_GATLING_PROJECT",
        )
    found = cached_simulation(source, cache_dir, project)
    if found:
        return found
    key = cache_key(source, project)
    final = cache_dir / key
    work = cache_dir / f"{key}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "src" / "test" / "scala" / "spike").mkdir(parents=True)
    for name in _PROJECT_FILES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / name, work / name)
    compiled_in_work = CompiledSimulation(key, work)
    compiled_in_work.source_path.write_text(source)
    try:
        result = run_command(
            maven_command(work), timeout_s=BUILD_TIMEOUT_S, what="compiling the Gatling simulation"
        )
        if result.returncode != 0:
            raise BuildError(
                "compiling the Gatling simulation failed:\n" + _maven_errors(result.stdout + result.stderr),
                where=str(compiled_in_work.source_path),
                fix="run `spike doctor`; if Maven cannot download Gatling, check access to Maven Central",
            )
        (work / "ok").write_text(key)
        try:
            work.rename(final)
        except OSError:  # another run compiled the same key meanwhile: keep what it finished
            found = cached_simulation(source, cache_dir, project)
            if found is not None:
                return found
            shutil.rmtree(final, ignore_errors=True)  # a broken leftover of a killed build
            work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CompiledSimulation(key, final)


def _maven_errors(output: str, limit: int = 30) -> str:
    lines = [line for line in output.splitlines() if "ERROR" in line or "error:" in line]
    return "\n".join((lines or output.splitlines())[-limit:])
