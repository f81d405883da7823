"""What a provider does: give each injector somewhere to run, and take it all away again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loadorch.plan.model import InjectorPlan, Plan
from loadorch.process import Command


@dataclass(frozen=True)
class Artifacts:
    """What every injector of a run needs, on this machine (the orchestrator gathers it)."""

    simulation_key: str  # content digest of the compiled simulation
    classes_dir: Path  # the compiled simulation
    jars: tuple[Path, ...]  # Gatling and its dependencies
    feeders: Mapping[str, Path]  # feeder name -> CSV file
    agent_zipapp: Path  # the metrics agent as one file, for injectors without spike installed
    java: str = "java"  # the JVM to use where the provider runs injectors on this machine

    @property
    def classpath(self) -> str:
        return ":".join((str(self.classes_dir), *map(str, self.jars)))


@dataclass(frozen=True)
class InjectorSite:
    """An injector's view of its own files, after `deploy`: the paths its commands must use.

    For `local` these are paths on this machine; for SSH injectors, paths on the injector.
    """

    workdir: str  # the injector's working directory for this run
    classpath: str  # compiled simulation + Gatling's jars
    feeders: Mapping[str, str]  # feeder name -> CSV path
    java: str = "java"
    agent: tuple[str, ...] = ()  # argv that runs the metrics agent, before `--config FILE`
    # False: the agent only writes its tap file, and spike forwards the points to InfluxDB itself,
    # so InfluxDB credentials never leave this machine and injectors need no route to InfluxDB.
    agent_writes_sink: bool = True


@dataclass(frozen=True)
class ClockCheck:
    """Each injector's clock minus this machine's, measured before the start instant is fixed."""

    offsets_ms: Mapping[str, float] = field(default_factory=dict)
    rtts_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def skew_ms(self) -> float:
        """The spread between the fastest and the slowest clock (what a shared start instant suffers)."""
        values = list(self.offsets_ms.values())
        return max(values) - min(values) if values else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "offsets_ms": {k: round(v, 2) for k, v in sorted(self.offsets_ms.items())},
            "rtts_ms": {k: round(v, 2) for k, v in sorted(self.rtts_ms.items())},
            "skew_ms": round(self.skew_ms, 2),
        }


@dataclass(frozen=True)
class TeardownReport:
    summary: str
    clean: bool = True
    details: Mapping[str, object] = field(default_factory=dict)


class InjectorHandle(Protocol):
    """One running injector."""

    injector_id: str

    def poll(self) -> int | None:
        """The exit status once the injector has ended, else None."""

    def stop(self, grace_s: float) -> None:
        """Ask it to stop, and force it after `grace_s`."""

    def results_dir(self) -> Path:
        """Where this injector's Gatling results are (local after `collect`)."""


class Provider(Protocol):
    """Creates the fleet, starts injectors, collects results and tears everything down."""

    name: str
    extra_lead_s: float  # added to the start lead: how much longer injectors take to launch here
    parallel_launch: bool  # whether `launch` and `put` may run for several injectors at once
    # a target this machine cannot reach is only a note: the injectors check it after the deploy
    checks_target_from_injectors: bool

    def preflight(self) -> None:
        """Cheap checks before anything is built or written: credentials, inventory."""

    def check_plan(self, plan: Plan) -> Sequence[str]:
        """Refuse what this fleet cannot hold (BadInputError, exit 2) before the run directory
        exists; returns warnings to show (a quota that could not be checked)."""

    def check_target(self, base_url: str) -> str | None:
        """After the deploy: the target as every injector sees it (raises when one cannot reach
        it); what to say, or None where the preflight checked it already."""

    def recovery_details(self) -> Mapping[str, object]:
        """What `spike runs recover` needs to reach this fleet again (journaled: never secrets)."""

    def provision(self, plan: Plan, run_dir: Path) -> None: ...

    def deploy(self, plan: Plan, artifacts: Artifacts, run_dir: Path) -> dict[str, InjectorSite]:
        """Put what every injector needs in place (once per content); returns each injector's paths."""

    def clock_check(self) -> ClockCheck:
        """Measure every injector's clock offset against this machine."""

    def put(self, injector: InjectorPlan, local: Path) -> None:
        """Copy a small file from the injector's local folder into its working directory."""

    def launch(
        self, injector: InjectorPlan, command: Command, workdir: Path, *, log_name: str = "console.log"
    ) -> InjectorHandle:
        """Start a process on the injector (Gatling, or its metrics agent), output to `workdir/log_name`.

        `workdir` is the injector's local folder under the run directory; remote providers mirror
        the injector's files there.
        """

    def sync(self) -> None:
        """Bring every injector's live files (logs, metrics tap, status) into its local folder."""

    def collect(self, handle: InjectorHandle) -> Path:
        """Bring the injector's results home; returns the local results directory."""

    def teardown(self) -> None:
        """Stop and remove everything this provider started; idempotent, never raises."""

    def teardown_report(self) -> TeardownReport:
        """What teardown did; `clean` is False when something may still be running or billed."""
