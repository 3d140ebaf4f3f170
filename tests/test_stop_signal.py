"""A stop signal is remembered, and still reaches the handler Tune installed (tests run in the main
thread, where Python delivers signals)."""
from __future__ import annotations

import os
import signal

import pytest

from study import stop_signal


@pytest.fixture
def tune_handler():
    """Stands in for Tune's SIGINT handler; records the signals it got; the previous handler comes back."""
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    stop_signal._STOPPED.clear()
    yield received
    signal.signal(signal.SIGINT, previous)
    stop_signal._STOPPED.clear()


def test_sigint_after_tunes_setup_is_remembered_and_handled_by_tune(tune_handler) -> None:
    stop_signal.StopSignalCallback().setup()
    assert not stop_signal.stop_requested()
    os.kill(os.getpid(), signal.SIGINT)
    assert tune_handler == [signal.SIGINT]
    assert stop_signal.stop_requested()


def test_sigterm_becomes_sigint_and_is_remembered(tune_handler) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_signal.sigterm_as_sigint():
        os.kill(os.getpid(), signal.SIGTERM)
        assert tune_handler == [signal.SIGINT]
        assert stop_signal.stop_requested()
    assert signal.getsignal(signal.SIGTERM) is before  # put back as it was


def test_no_signal_no_stop(tune_handler) -> None:
    with stop_signal.sigterm_as_sigint():
        stop_signal.StopSignalCallback().setup()
    assert not stop_signal.stop_requested()
    assert tune_handler == []
