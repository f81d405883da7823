"""Render a Gatling Scala simulation from a scenario (pure).

The template renders structure only; numbers arrive as -Dspike.* properties
(see `command.py`), so one compiled class serves every injector.
"""

from __future__ import annotations

import json
from itertools import accumulate

import jinja2

from loadorch import __version__
from loadorch.engine.gatling import console
from loadorch.profiles.model import PLACEHOLDER, Profile, Slos

CLASS_NAME = "SpikeSimulation"
SIMULATION_CLASS = f"spike.{CLASS_NAME}"

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("loadorch.engine.gatling", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


def scala_string(value: str) -> str:
    """A Scala string literal: JSON's escaping is valid Scala for plain strings."""
    return json.dumps(value, ensure_ascii=True)


_env.filters["scala"] = scala_string


def to_gatling_el(text: str) -> str:
    """Profile placeholders `{column}` become Gatling EL `#{column}`."""
    return PLACEHOLDER.sub(lambda m: "#{" + m.group(1) + "}", text)


def render_simulation(profile: Profile) -> str:
    """The Scala source of the simulation for this profile's scenario and SLOs."""
    scenario = profile.scenario
    requests = [
        {
            "name": r.name,
            "var": f"req_{_ident(r.name)}",
            "method_call": r.method.lower(),
            "path": to_gatling_el(r.path),
            "headers": sorted((k, to_gatling_el(v)) for k, v in r.headers.items()),
            "body": None if r.body is None else to_gatling_el(r.body),
            "statuses": ", ".join(str(s) for s in r.expect_status),
        }
        for r in scenario.requests
    ]
    weights = list(accumulate(r.weight for r in scenario.requests))
    return _env.get_template("Simulation.scala.j2").render(
        profile_name=profile.name,
        class_name=CLASS_NAME,
        spike_version=__version__,
        scenario_name=scenario.name,
        requests=requests,
        requests_per_user=scenario.requests_per_user,
        cumulative_weights=", ".join(repr(float(w)) for w in weights),
        think_min_ms=scenario.think_time.min_ms,
        think_max_ms=scenario.think_time.max_ms,
        feeders=[
            {"name": f.name, "var": f"feeder_{_ident(f.name)}", "strategy": f.strategy}
            for f in scenario.feeders
        ],
        assertions=render_assertions(profile.slos),
        console={
            "waiting": console.WAITING_SCALA,
            "no_go": console.NO_GO_SCALA,
            "ready": console.READY_SCALA,
            "released": console.RELEASED_SCALA,
        },
    )


def render_assertions(slos: Slos) -> list[str]:
    """SLOs as Gatling assertions: a failing one makes the injector JVM exit 2."""
    out: list[str] = []
    for slo in slos.latency:
        path = "global" if slo.request is None else f"details({scala_string(slo.request)})"
        out.append(f"{path}.responseTime.percentile({float(slo.percentile)}).lte({slo.max_ms})")
    if slos.error_rate_max is not None:
        out.append(f"global.failedRequests.percent.lte({slos.error_rate_max * 100!r})")
    return out


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
