"""The run result: one frozen, typed value that says what a run did and what it means.

Every consumer reads this value: the CLI, summary.json (its serialisation), the
history registry, JUnit and the webhook, InfluxDB's run points. The exit code is
derived from it in one place (`RunResult.exit_code`). Whatever changes a verdict
after judging (teardown, a regression, a validity gate, a stop criterion) is a
function from a result to a new result (`loadorch.run.adjust`).

Domain terms:

*verdict*
    passed (every SLO met, and the run measured what was planned), failed (an
    SLO or a regression check failed, or a stop criterion ended the storm),
    degraded (an injector did not complete: the load was smaller than planned),
    invalid (the figures cannot be trusted: a stalled or saturated injector, no
    data at all), interrupted (Ctrl-C, SIGTERM, SIGHUP), aborted (spike itself
    died and the run was recovered later, a full disk, or a stop criterion).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from loadorch.analysis.stats import ErrorCount, LatencyStats, MergedStats
from loadorch.errors import BadInputError, ExitCode

SCHEMA_VERSION = 2
"""summary.json's schema: 2 has `schema_version`, `state`, `reasons`, `gates` and the verdicts below."""


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    DEGRADED = "degraded"
    INVALID = "invalid"
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"


class RunState(StrEnum):
    """Where the run is: a summary written mid-way says so, so it is never mistaken for a final one."""

    RUNNING = "running"  # the load is on; the verdict is provisional
    JUDGED = "judged"  # the verdict is final; post-run steps (report, history) may follow
    FINISHED = "finished"  # every step done


@dataclass(frozen=True)
class SloResult:
    """One SLO of the profile against the exact merged figures."""

    name: str
    threshold: float
    actual: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "actual": self.actual, "passed": self.passed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SloResult:
        return cls(str(data["name"]), float(data["threshold"]), data.get("actual"), bool(data["passed"]))


@dataclass(frozen=True)
class ScopeLatency:
    """The latency summary of one scope (all, a request, a region): every, OK and KO responses."""

    all: LatencyStats
    ok: LatencyStats
    ko: LatencyStats

    def to_dict(self) -> dict[str, Any]:
        return {"all": self.all.to_dict(), "ko": self.ko.to_dict(), "ok": self.ok.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScopeLatency:
        def one(d: Mapping[str, Any]) -> LatencyStats:
            values: dict[str, Any] = {f.name: d.get(f.name) for f in fields(LatencyStats)}
            values["count"] = int(values["count"] or 0)
            return LatencyStats(**values)

        return cls(one(data["all"]), one(data["ok"]), one(data["ko"]))


@dataclass(frozen=True)
class InjectorOutcome:
    """How one injector ran: its process, its share of the plan, its start."""

    id: str
    region: str
    state: str  # completed | stopped | failed | lost
    exit_code: int | None
    planned_users: float
    users_started: int = 0
    requests: int = 0
    delivered_share: float | None = None
    first_request_offset_ms: int | None = None
    last_request_end_ms: int | None = None
    ready_margin_ms: int | None = None
    release_offset_ms: int | None = None
    log: str | None = None
    note: str | None = None  # what else is worth knowing (e.g. stopped while its users waited for answers)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InjectorOutcome:
        """Read back; a summary from before schema 2 may lack some fields (they get neutral values)."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {"region": "", "state": "unknown", "exit_code": None, "planned_users": 0.0}
        values.update({k: v for k, v in data.items() if k in names})
        return cls(**values)


@dataclass(frozen=True)
class Fidelity:
    """How closely the achieved arrivals followed the plan (MAPE over seconds planned at >= 1 user/s)."""

    mape_pct: float | None
    by_region_mape_pct: Mapping[str, float | None]
    achieved_vs_planned_requests: float | None
    per_second: tuple[tuple[int, float, int], ...] = ()  # (second, planned users, achieved users)


@dataclass(frozen=True)
class StartSkew:
    first_request_offset_min: int | None = None
    first_request_offset_max: int | None = None
    first_request_spread: int | None = None
    ready_margin_min: int | None = None
    release_spread: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class GateFinding:
    """A validity gate that did not hold: what, where (injector or region) and which seconds."""

    gate: str  # fidelity | stall | burst | heartbeat | saturation
    where: str
    detail: str
    seconds: tuple[int, ...] = ()
    invalidates: bool = True  # False: a warning, reported beside the verdict without changing it

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "where": self.where,
            "detail": self.detail,
            "seconds": list(self.seconds),
            "invalidates": self.invalidates,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateFinding:
        return cls(
            str(data["gate"]),
            str(data["where"]),
            str(data["detail"]),
            tuple(data.get("seconds") or ()),
            bool(data.get("invalidates", True)),
        )

    def describe(self) -> str:
        return f"{self.where}: {self.detail}"


@dataclass(frozen=True)
class Teardown:
    """What teardown did; `clean` only when everything was verified gone."""

    summary: str
    clean: bool
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "clean": self.clean, **self.details}


@dataclass(frozen=True)
class ReportState:
    """Gatling's merged HTML report: off, building, built or failed."""

    state: str = "off"
    path: str | None = None
    after_s: float | None = None


@dataclass(frozen=True)
class RunResult:
    """What one run did and what it means (see the module docstring)."""

    run_id: str
    profile: str
    provider: str
    target: str
    start_at_ms: int
    duration_s: float
    planned_users: float
    planned_requests: float
    verdict: Verdict
    reasons: tuple[str, ...]
    run_dir: str
    state: RunState = RunState.JUDGED
    requests_total: int = 0
    requests_ok: int = 0
    requests_ko: int = 0
    users_started: int = 0
    users_ended: int = 0
    latency: ScopeLatency | None = None
    by_request: Mapping[str, ScopeLatency] = field(default_factory=dict)
    by_region: Mapping[str, ScopeLatency] = field(default_factory=dict)
    errors: tuple[ErrorCount, ...] = ()
    slos: tuple[SloResult, ...] = ()
    injectors: tuple[InjectorOutcome, ...] = ()
    fidelity: Fidelity | None = None
    skew: StartSkew | None = None
    late_injectors: tuple[str, ...] = ()
    malformed_lines: int = 0
    gates: tuple[GateFinding, ...] = ()
    abort_criterion: str | None = None  # the stop criterion that ended the storm, if one did
    teardown: Teardown | None = None
    clock: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    regression: Mapping[str, Any] | None = None
    spike_slos: Mapping[str, Any] | None = None
    replay_fidelity: Mapping[str, Any] | None = None
    report: ReportState = ReportState()
    history: str | None = None
    grafana_annotations: str | None = None
    judged_after_s: float | None = None
    # the exact statistics, in this process only (never serialised: summary.json holds their summary)
    stats: MergedStats | None = field(default=None, compare=False, repr=False)

    @property
    def reason(self) -> str:
        """The reasons as one line, the most important first."""
        return "; ".join(self.reasons)

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code: derived here and nowhere else.

        Teardown that could not verify everything is gone wins over every
        verdict: something may still be running or billed, and that is the news.
        """
        if self.teardown is not None and not self.teardown.clean:
            return ExitCode.INFRASTRUCTURE
        if self.verdict is Verdict.ABORTED:
            # a stop criterion ended the storm because the target broke: the system failed under load
            return ExitCode.SLO_FAILED if self.abort_criterion else ExitCode.INFRASTRUCTURE
        return _EXIT_CODES[self.verdict]

    @property
    def passed(self) -> bool:
        return self.exit_code is ExitCode.PASSED

    def to_dict(self) -> dict[str, Any]:
        """summary.json: JSON-able, with the keys earlier schema versions had kept where they were."""
        fid = self.fidelity
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "profile": self.profile,
            "provider": self.provider,
            "target": self.target,
            "start_at_ms": self.start_at_ms,
            "duration_s": self.duration_s,
            "planned_users": round(self.planned_users, 1),
            "planned_requests": round(self.planned_requests, 1),
            "state": self.state.value,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "exit_code": int(self.exit_code),
            "run_dir": self.run_dir,
            "injectors": [i.to_dict() for i in self.injectors],
            "gates": [g.to_dict() for g in self.gates],
            "abort_criterion": self.abort_criterion,
            "malformed_lines": self.malformed_lines,
            "report": self.report.path,
            "report_state": self.report.state,
            "errors": [e.to_dict() for e in self.errors],
            "slos": [s.to_dict() for s in self.slos],
            "late_injectors": list(self.late_injectors),
        }
        if self.report.after_s is not None:
            out["report_after_s"] = self.report.after_s
        if self.latency is not None:
            out["requests"] = {"total": self.requests_total, "ok": self.requests_ok, "ko": self.requests_ko}
            out["users"] = {"started": self.users_started, "ended": self.users_ended}
            out["latency"] = self.latency.to_dict()
            out["by_request"] = {k: v.to_dict() for k, v in sorted(self.by_request.items())}
            out["by_region"] = {k: v.to_dict() for k, v in sorted(self.by_region.items())}
        if fid is not None:
            out["fidelity_mape_pct"] = fid.mape_pct
            out["fidelity_by_region_mape_pct"] = dict(fid.by_region_mape_pct)
            out["achieved_vs_planned_requests"] = fid.achieved_vs_planned_requests
            out["per_second"] = [
                {"second": s, "planned_users": p, "achieved_users": a} for s, p, a in fid.per_second
            ]
        if self.skew is not None:
            out["start_skew_ms"] = self.skew.to_dict()
        optional = {
            "teardown": self.teardown.to_dict() if self.teardown else None,
            "clock": dict(self.clock) if self.clock else None,
            "metrics": dict(self.metrics) if self.metrics is not None else None,
            "regression": dict(self.regression) if self.regression is not None else None,
            "spike_slos": dict(self.spike_slos) if self.spike_slos is not None else None,
            "replay_fidelity": dict(self.replay_fidelity) if self.replay_fidelity is not None else None,
            "history": self.history,
            "grafana_annotations": self.grafana_annotations,
            "judged_after_s": self.judged_after_s,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """A result read back from summary.json (schema 2; schema 1 files are read as far as they go)."""
        try:
            verdict = _verdict_of(str(data["verdict"]))
            reasons = tuple(data.get("reasons") or ([data["reason"]] if data.get("reason") else ()))
            requests = data.get("requests") or {}
            users = data.get("users") or {}
            fid = None
            if "fidelity_mape_pct" in data:
                fid = Fidelity(
                    data.get("fidelity_mape_pct"),
                    dict(data.get("fidelity_by_region_mape_pct") or {}),
                    data.get("achieved_vs_planned_requests"),
                    tuple(
                        (int(r["second"]), float(r["planned_users"]), int(r["achieved_users"]))
                        for r in data.get("per_second") or []
                    ),
                )
            teardown = data.get("teardown")
            return cls(
                run_id=str(data["run_id"]),
                profile=str(data.get("profile") or ""),
                provider=str(data.get("provider") or ""),
                target=str(data.get("target") or ""),
                start_at_ms=int(data.get("start_at_ms") or 0),
                duration_s=float(data.get("duration_s") or 0),
                planned_users=float(data.get("planned_users") or 0),
                planned_requests=float(data.get("planned_requests") or 0),
                verdict=verdict,
                reasons=reasons,
                run_dir=str(data.get("run_dir") or ""),
                state=RunState(data.get("state") or RunState.FINISHED.value),
                requests_total=int(requests.get("total") or 0),
                requests_ok=int(requests.get("ok") or 0),
                requests_ko=int(requests.get("ko") or 0),
                users_started=int(users.get("started") or 0),
                users_ended=int(users.get("ended") or 0),
                latency=ScopeLatency.from_dict(data["latency"]) if data.get("latency") else None,
                by_request={k: ScopeLatency.from_dict(v) for k, v in (data.get("by_request") or {}).items()},
                by_region={k: ScopeLatency.from_dict(v) for k, v in (data.get("by_region") or {}).items()},
                errors=tuple(
                    ErrorCount(str(e["message"]), int(e["count"])) for e in data.get("errors") or []
                ),
                slos=tuple(SloResult.from_dict(s) for s in data.get("slos") or []),
                injectors=tuple(InjectorOutcome.from_dict(i) for i in data.get("injectors") or []),
                fidelity=fid,
                skew=StartSkew(**data["start_skew_ms"]) if data.get("start_skew_ms") else None,
                late_injectors=tuple(data.get("late_injectors") or ()),
                malformed_lines=int(data.get("malformed_lines") or 0),
                gates=tuple(GateFinding.from_dict(g) for g in data.get("gates") or []),
                abort_criterion=data.get("abort_criterion"),
                teardown=Teardown(
                    str(teardown["summary"]),
                    bool(teardown.get("clean", True)),
                    {k: v for k, v in teardown.items() if k not in ("summary", "clean")},
                )
                if teardown
                else None,
                clock=data.get("clock"),
                metrics=data.get("metrics"),
                regression=data.get("regression"),
                spike_slos=data.get("spike_slos"),
                replay_fidelity=data.get("replay_fidelity"),
                report=ReportState(
                    str(data.get("report_state") or "off"), data.get("report"), data.get("report_after_s")
                ),
                history=data.get("history"),
                grafana_annotations=data.get("grafana_annotations"),
                judged_after_s=data.get("judged_after_s"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(
                f"not a spike run summary: {exc}",
                fix="pass the summary.json that `spike run` wrote, or its run directory",
            ) from None


_EXIT_CODES = {
    Verdict.PASSED: ExitCode.PASSED,
    Verdict.FAILED: ExitCode.SLO_FAILED,
    Verdict.DEGRADED: ExitCode.INFRASTRUCTURE,
    Verdict.INVALID: ExitCode.INFRASTRUCTURE,
    Verdict.INTERRUPTED: ExitCode.INTERRUPTED,
}

# schema 1 called a run without any recorded request "no-data": nothing was measured
_LEGACY_VERDICTS = {"no-data": Verdict.INVALID}


def _verdict_of(text: str) -> Verdict:
    if text in _LEGACY_VERDICTS:
        return _LEGACY_VERDICTS[text]
    return Verdict(text)
