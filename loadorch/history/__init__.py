"""Run history: a local registry of judged runs, noise-aware regression checks, spike SLOs."""

from loadorch.history.compare import (
    Comparison,
    MetricDelta,
    ScopeComparison,
    Tolerances,
    compare_runs,
    compare_to_baseline,
)
from loadorch.history.registry import (
    MissedRun,
    RequestStats,
    RunRecord,
    SloRow,
    get_run,
    history_lines,
    last_passing,
    list_runs,
    missed,
    record_from_summary,
    record_missed,
    record_run,
)
from loadorch.history.spike_slos import (
    BreakingPoint,
    ErrorBudget,
    breaking_point,
    error_budget,
    time_to_recover_s,
)

__all__ = [
    "BreakingPoint",
    "Comparison",
    "ErrorBudget",
    "MetricDelta",
    "MissedRun",
    "RequestStats",
    "RunRecord",
    "ScopeComparison",
    "SloRow",
    "Tolerances",
    "breaking_point",
    "compare_runs",
    "compare_to_baseline",
    "error_budget",
    "get_run",
    "history_lines",
    "last_passing",
    "list_runs",
    "missed",
    "record_from_summary",
    "record_missed",
    "record_run",
    "time_to_recover_s",
]
