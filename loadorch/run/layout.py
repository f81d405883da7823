"""Every path of a run directory, in one value (nothing else builds these paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TAP_FILE = "agent-tap.lp"
GO_FILE = "go"  # holds the shared start instant, on the injector's clock


@dataclass(frozen=True)
class RunLayout:
    """`runs/<run_id>/`: plan, profile, simulation, injectors' folders, report, summary, journal."""

    root: Path

    @classmethod
    def of(cls, runs_dir: Path, run_id: str) -> RunLayout:
        # absolute: injectors run in their own working directories
        return cls(runs_dir.resolve() / run_id)

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def profile(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def simulation(self) -> Path:
        return self.root / "Simulation.scala"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def report_dir(self) -> Path:
        """Gatling's merged HTML report, and the injectors' logs it is built from."""
        return self.root / "report"

    @property
    def report_index(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def report_console(self) -> Path:
        return self.root / "report-console.log"

    @property
    def unsent_points(self) -> Path:
        return self.root / "unsent-points.lp"

    @property
    def terraform_dir(self) -> Path:
        return self.root / "terraform"

    def injector(self, injector_id: str) -> Path:
        """The injector's local folder (remote providers mirror the injector's files here)."""
        return self.root / "injectors" / injector_id

    def console(self, injector_id: str) -> Path:
        return self.injector(injector_id) / "console.log"

    def tap(self, injector_id: str) -> Path:
        return self.injector(injector_id) / TAP_FILE

    def go_file(self, injector_id: str) -> Path:
        return self.injector(injector_id) / GO_FILE

    def merged_log(self, injector_id: str) -> Path:
        return self.report_dir / f"{injector_id}.log"
