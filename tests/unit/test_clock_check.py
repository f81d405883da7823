"""The fleet's clocks: refused beyond the bound before anything runs, reported as measured otherwise."""

from __future__ import annotations

import pytest

from loadorch.errors import InjectorError
from loadorch.providers.base import ClockCheck
from loadorch.run.clock import check_clock


def test_a_host_clock_off_by_five_seconds_is_refused_naming_it() -> None:
    clock = ClockCheck(offsets_ms={"eu-west-2-1": 0.4, "us-east-1-1": 5003.0}, rtts_ms={})
    with pytest.raises(InjectorError) as caught:
        check_clock(clock, 250.0, compensated=True)
    text = caught.value.render()
    assert text.startswith("us-east-1-1: clock offset +5003 ms against this machine exceeds 250 ms")
    assert "time sync" in (caught.value.fix or "")
    assert "compensated" not in text  # a refused fleet never starts: nothing was compensated


def test_offsets_within_the_bound_are_said_with_a_warning_above_50_ms() -> None:
    quiet = check_clock(ClockCheck(offsets_ms={"a": 0.5, "b": -1.0}), 250.0, compensated=True)
    assert quiet == "injector clock skew 1.5 ms, worst offset -1.0 ms (b); compensated"
    loud = check_clock(ClockCheck(offsets_ms={"a": 80.0}), 250.0, compensated=False)
    assert loud is not None and loud.startswith("warning: ") and "not compensated" in loud
    assert check_clock(ClockCheck(), 250.0, compensated=True) is None
