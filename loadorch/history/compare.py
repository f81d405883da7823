"""Noise-aware comparison of two runs: did the candidate regress against the baseline?

The rule, per scope (all requests, then each request) and per metric:

- **latency** (p50, p95, p99): the candidate may exceed the baseline by
  ``max(latency_rel * baseline, latency_abs_ms)``; more is *regressed*, as
  much less is *improved*. Both bounds are needed: a relative bound alone
  flags a 10 ms p95 that became 13 ms (+30%), yet a few ms is scheduling and
  network jitter on any machine; an absolute bound alone would let a 2 s
  p95 grow by 300 ms unnoticed. Defaults: 10% or 5 ms, whichever is larger.
- **error rate** (KO / requests): the candidate may reach
  ``max(baseline + error_rate_abs, baseline * error_rate_factor)``; more is
  regressed. The absolute part (0.5 percentage points) lets a clean run
  (0 errors) tolerate a stray timeout; the factor (x1.5) keeps a run that
  already failed 10% from being flagged for 10.4%. Improved mirrors it.
- **throughput** (requests per second of the planned duration): a drop of
  more than `throughput_drop_rel` (5%) is regressed; as large a rise is
  improved. Under an open-model load throughput follows the plan, so a drop
  means requests that were planned never completed. Runs with different plan
  digests put different loads on the target: the comparison is still made,
  and a note says so.
- **samples**: a scope with fewer than `min_samples` (100) requests in
  either run is *insufficient*, never regressed: a p99 of 40 samples is one
  request. A scope that exists in only one run is insufficient too.

A scope's status is its worst metric (regressed > improved > ok), or
insufficient when every metric is. The comparison's verdict is "regressed"
when any scope regressed, else "ok".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loadorch.errors import BadInputError
from loadorch.history.registry import (
    RunRecord,
    get_run,
    last_passing,
    record_from_result,
    record_from_summary,
)
from loadorch.run.result import RunResult

RowStatus = Literal["ok", "regressed", "improved", "insufficient"]
GLOBAL_SCOPE = "all requests"
LAST_PASSING = "last-passing"
LATENCY_METRICS = ("p50", "p95", "p99")


@dataclass(frozen=True)
class Tolerances:
    """How much worse a candidate may be before it counts as regressed (see the module docstring)."""

    latency_rel: float = 0.10
    latency_abs_ms: float = 5.0
    error_rate_abs: float = 0.005
    error_rate_factor: float = 1.5
    throughput_drop_rel: float = 0.05
    min_samples: int = 100

    def __post_init__(self) -> None:
        if min(self.latency_rel, self.latency_abs_ms, self.error_rate_abs, self.throughput_drop_rel) < 0:
            raise BadInputError("tolerances cannot be negative", fix="pass 0 or more for every tolerance")
        if self.error_rate_factor < 1:
            raise BadInputError(
                f"error_rate_factor must be at least 1, not {self.error_rate_factor}",
                fix="use 1 for no relative allowance, 1.5 for +50%",
            )


@dataclass(frozen=True)
class MetricDelta:
    """One metric of one scope in both runs."""

    metric: str  # p50 | p95 | p99 | error_rate | throughput_rps
    baseline: float | None
    candidate: float | None
    status: RowStatus

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.candidate is None:
            return None
        return self.candidate - self.baseline

    @property
    def delta_pct(self) -> float | None:
        if self.delta is None or not self.baseline:
            return None
        return 100 * self.delta / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "delta": None if self.delta is None else round(self.delta, 6),
            "delta_pct": None if self.delta_pct is None else round(self.delta_pct, 3),
            "metric": self.metric,
            "status": self.status,
        }


@dataclass(frozen=True)
class ScopeComparison:
    """All requests, or one request, in both runs."""

    scope: str
    baseline_count: int
    candidate_count: int
    metrics: tuple[MetricDelta, ...]
    status: RowStatus

    def metric(self, name: str) -> MetricDelta:
        return next(m for m in self.metrics if m.metric == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_count": self.baseline_count,
            "candidate_count": self.candidate_count,
            "metrics": {m.metric: m.to_dict() for m in self.metrics},
            "scope": self.scope,
            "status": self.status,
        }


@dataclass(frozen=True)
class Comparison:
    """The candidate run against its baseline: the global row first, then one row per request."""

    baseline_run_id: str
    candidate_run_id: str
    rows: tuple[ScopeComparison, ...]
    tolerances: Tolerances
    notes: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> Literal["regressed", "ok"]:
        return "regressed" if any(r.status == "regressed" for r in self.rows) else "ok"

    @property
    def regressed_requests(self) -> list[str]:
        """The requests (not the global row) that regressed."""
        return [r.scope for r in self.rows[1:] if r.status == "regressed"]

    @property
    def overall(self) -> ScopeComparison:
        return self.rows[0]

    def to_dict(self) -> dict[str, Any]:
        t = self.tolerances
        return {
            "baseline_run_id": self.baseline_run_id,
            "candidate_run_id": self.candidate_run_id,
            "notes": list(self.notes),
            "regressed_requests": self.regressed_requests,
            "rows": [r.to_dict() for r in self.rows],
            "tolerances": {
                "error_rate_abs": t.error_rate_abs,
                "error_rate_factor": t.error_rate_factor,
                "latency_abs_ms": t.latency_abs_ms,
                "latency_rel": t.latency_rel,
                "min_samples": t.min_samples,
                "throughput_drop_rel": t.throughput_drop_rel,
            },
            "verdict": self.verdict,
        }


def _latency_status(base: float | None, cand: float | None, t: Tolerances) -> RowStatus:
    if base is None or cand is None:
        return "insufficient"
    allowance = max(t.latency_rel * base, t.latency_abs_ms)
    if cand > base + allowance:
        return "regressed"
    if cand < base - allowance:
        return "improved"
    return "ok"


def _error_status(base: float | None, cand: float | None, t: Tolerances) -> RowStatus:
    if base is None or cand is None:
        return "insufficient"
    if cand > max(base + t.error_rate_abs, base * t.error_rate_factor):
        return "regressed"
    # the same rule with the roles swapped: the baseline would have regressed against the candidate
    if base > max(cand + t.error_rate_abs, cand * t.error_rate_factor):
        return "improved"
    return "ok"


def _throughput_status(base: float | None, cand: float | None, t: Tolerances) -> RowStatus:
    if base is None or cand is None or base <= 0:
        return "insufficient"
    if cand < base * (1 - t.throughput_drop_rel):
        return "regressed"
    if cand > base * (1 + t.throughput_drop_rel):
        return "improved"
    return "ok"


def _scope_status(metrics: tuple[MetricDelta, ...]) -> RowStatus:
    statuses = {m.status for m in metrics}
    for status in ("regressed", "improved", "ok"):
        if status in statuses:
            return status  # type: ignore[return-value]
    return "insufficient"


@dataclass(frozen=True)
class _Side:
    count: int
    ko: int
    p50: int | None
    p95: int | None
    p99: int | None
    throughput: float | None


def _per_second(count: int, duration_s: float | None) -> float | None:
    return round(count / duration_s, 6) if duration_s else None


def _compare_scope(scope: str, base: _Side | None, cand: _Side | None, t: Tolerances) -> ScopeComparison:
    enough = (
        base is not None and cand is not None and base.count >= t.min_samples and cand.count >= t.min_samples
    )

    def judged(metric: str, b: float | None, c: float | None, status: RowStatus) -> MetricDelta:
        return MetricDelta(metric, b, c, status if enough else "insufficient")

    metrics = [
        judged(
            q,
            getattr(base, q) if base else None,
            getattr(cand, q) if cand else None,
            _latency_status(getattr(base, q) if base else None, getattr(cand, q) if cand else None, t),
        )
        for q in LATENCY_METRICS
    ]
    b_err = base.ko / base.count if base and base.count else None
    c_err = cand.ko / cand.count if cand and cand.count else None
    metrics.append(judged("error_rate", b_err, c_err, _error_status(b_err, c_err, t)))
    b_tp, c_tp = (base.throughput if base else None), (cand.throughput if cand else None)
    metrics.append(judged("throughput_rps", b_tp, c_tp, _throughput_status(b_tp, c_tp, t)))
    frozen = tuple(metrics)
    return ScopeComparison(
        scope, base.count if base else 0, cand.count if cand else 0, frozen, _scope_status(frozen)
    )


def _sides(record: RunRecord) -> tuple[_Side, dict[str, _Side]]:
    duration = record.duration_s
    overall = _Side(
        record.requests, record.ko, record.p50, record.p95, record.p99, _per_second(record.requests, duration)
    )
    requests = {
        r.request: _Side(r.count, r.ko, r.p50, r.p95, r.p99, _per_second(r.count, duration))
        for r in record.request_stats
    }
    return overall, requests


def compare_runs(
    baseline: RunRecord, candidate: RunRecord, tolerances: Tolerances | None = None
) -> Comparison:
    """Compare every scope of `candidate` with `baseline` under `tolerances` (pure)."""
    t = tolerances or Tolerances()
    base_all, base_requests = _sides(baseline)
    cand_all, cand_requests = _sides(candidate)
    rows = [_compare_scope(GLOBAL_SCOPE, base_all, cand_all, t)]
    for name in sorted(set(base_requests) | set(cand_requests)):
        rows.append(_compare_scope(name, base_requests.get(name), cand_requests.get(name), t))
    notes = []
    if baseline.plan_digest and candidate.plan_digest and baseline.plan_digest != candidate.plan_digest:
        notes.append(
            "the runs have different plans (plan digests differ): throughput and latency "
            "differences may come from the load, not the system"
        )
    if baseline.profile != candidate.profile:
        notes.append(f"the runs are of different profiles: {baseline.profile} and {candidate.profile}")
    if baseline.verdict != "passed":
        notes.append(f"the baseline's verdict is {baseline.verdict}, not passed")
    only_base = sorted(set(base_requests) - set(cand_requests))
    only_cand = sorted(set(cand_requests) - set(base_requests))
    if only_base:
        notes.append("only in the baseline: " + ", ".join(only_base))
    if only_cand:
        notes.append("only in the candidate: " + ", ".join(only_cand))
    return Comparison(baseline.run_id, candidate.run_id, tuple(rows), t, tuple(notes))


def compare_to_baseline(
    candidate_run: RunResult | Mapping[str, Any],
    baseline_spec: str,
    profile: str,
    tolerances: Tolerances | None = None,
    *,
    plan_digest: str = "",
    provider: str | None = None,
    db: Path | str | None = None,
) -> Comparison | None:
    """Compare a run (its typed result, or its summary.json) with its baseline: "last-passing"
    (of `profile`) or a run id.

    The candidate need not be recorded yet. Returns None when the baseline
    is "last-passing" and no earlier passing run of `profile` exists (the
    first run of a schedule has nothing to regress from); an unknown run id
    raises BadInputError.
    """
    if isinstance(candidate_run, RunResult):
        candidate = record_from_result(
            candidate_run, profile=profile, plan_digest=plan_digest, provider=provider
        )
    else:
        candidate = record_from_summary(
            candidate_run, profile=profile, plan_digest=plan_digest, provider=provider
        )
    if baseline_spec == LAST_PASSING:
        baseline = last_passing(profile, before_run_id=candidate.run_id, db=db)
        if baseline is None:
            return None
    else:
        baseline = get_run(baseline_spec, db=db)
        if baseline.run_id == candidate.run_id:
            raise BadInputError(
                f"run {candidate.run_id} cannot be its own baseline",
                fix=f"pass another run id, or {LAST_PASSING!r}",
            )
    return compare_runs(baseline, candidate, tolerances)
