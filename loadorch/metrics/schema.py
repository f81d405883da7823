"""The InfluxDB schema spike writes: measurements, tags and fields, in one place.

Every point carries the tag `run_id`. Timestamps are milliseconds since the
epoch (line protocol precision `ms`). Dashboards, the agent, the orchestrator
and the README all refer to these names.

measurement       tags                                                  fields
---------------   ---------------------------------------------------   -------------------------------------------
gatling           run_id region injector simulation request status      count min max mean stddev p50 p75 p95 p99
                  (request: a request name or "allRequests";            (one point per injector per write period,
                   status: ok | ko | all)                                 1 s; count = requests in that period)
gatling_users     run_id region injector simulation scenario            active waiting done
                  (scenario: a scenario name or "allUsers")
injector_health   run_id region injector host                           cpu_pct load1 mem_used_pct net_sent_bytes
                                                                        net_recv_bytes tcp_connections
planned_rate      run_id region                                         users_per_s (one point per second of the plan)
run_events        run_id event (start | phase | end | verdict)          text verdict
run_summary       run_id profile verdict scope name                     requests ok ko error_rate p50 p75 p95 p99 max
                  (scope: global | region | request | error;            peak_rate_per_s (scope error: ko only)
                   name: "all", a region, a request or an error message)
"""

from __future__ import annotations

GATLING = "gatling"
GATLING_USERS = "gatling_users"
INJECTOR_HEALTH = "injector_health"
PLANNED_RATE = "planned_rate"
RUN_EVENTS = "run_events"
RUN_SUMMARY = "run_summary"

GATLING_FIELDS = ("count", "min", "max", "mean", "stddev", "p50", "p75", "p95", "p99")
# Gatling 3.11.5 Graphite metric names -> spike field names
GRAPHITE_METRIC_FIELDS = {
    "count": "count",
    "min": "min",
    "max": "max",
    "mean": "mean",
    "stdDev": "stddev",
    "percentiles50": "p50",
    "percentiles75": "p75",
    "percentiles95": "p95",
    "percentiles99": "p99",
}
USERS_FIELDS = ("active", "waiting", "done")
HEALTH_FIELDS = ("cpu_pct", "load1", "mem_used_pct", "net_sent_bytes", "net_recv_bytes", "tcp_connections")

# The Graphite root path prefix spike configures in every injector.
GRAPHITE_PREFIX = "spike"


def escape_tag(value: str) -> str:
    """Line-protocol escaping for tag keys and values (commas, spaces, equals signs)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def escape_measurement(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def field_value(value: float | int | str | bool) -> str:
    """A line-protocol field value: floats as is, ints as floats (one type per field), strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value))
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(
    measurement: str, tags: dict[str, str], fields: dict[str, float | int | str | bool], ts_ms: int
) -> str:
    """One line of InfluxDB line protocol with tags sorted (as InfluxDB prefers) and ms timestamp."""
    tag_text = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v != "")
    field_text = ",".join(f"{escape_tag(k)}={field_value(v)}" for k, v in fields.items())
    return f"{escape_measurement(measurement)}{tag_text} {field_text} {ts_ms}"
