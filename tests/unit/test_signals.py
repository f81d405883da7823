"""Interrupts: the first signal raises, later ones are counted; a deferred block is written whole."""

from __future__ import annotations

import os
import signal

import pytest

from loadorch.run.signals import Interrupts


def _signal_self(sig: signal.Signals) -> None:
    # delivered to the main thread before os.kill returns (CPython runs the handler at the next bytecode)
    os.kill(os.getpid(), sig)


def test_the_first_signal_raises_and_later_ones_are_only_counted() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            _signal_self(signal.SIGTERM)
        _signal_self(signal.SIGINT)  # shielded now: counted, nothing raised
    assert interrupts.received == ["SIGTERM", "SIGINT"]
    assert interrupts.forced


def test_a_signal_inside_a_deferred_block_is_raised_after_it() -> None:
    interrupts = Interrupts()
    written = []
    with interrupts.installed():
        with interrupts.deferred():
            written.append("journal")
            _signal_self(signal.SIGHUP)
            written.append("plan")  # the block goes on to its end
        assert written == ["journal", "plan"]
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_deferred()
        interrupts.raise_deferred()  # raised once only
    assert interrupts.received == ["SIGHUP"]
    assert not interrupts.forced


def test_raise_deferred_without_a_signal_does_nothing() -> None:
    interrupts = Interrupts()
    with interrupts.installed():
        with interrupts.deferred():
            pass
        interrupts.raise_deferred()
    assert interrupts.received == [] and not interrupts.shielded


def test_the_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with Interrupts().installed():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
