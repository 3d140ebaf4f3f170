"""Stopping a study by signal: Ctrl-C (SIGINT) or SIGTERM ends it the way Tune's own SIGINT handler
does (trials stopped, state saved, `--resume` continues), and the run remembers that it was stopped.

Tune says nothing back when its handler stopped the experiment (its `fit()` returns as after a
complete study), and the trials it had not yet created leave no row: a study stopped between two
rungs looks complete in the tables. So the handler Tune installs is wrapped, once Tune has installed
it, by `StopSignalCallback.setup`, and `stop_requested()` tells whether a stop signal came."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from ray.tune import Callback

_STOPPED = threading.Event()  # this process's: set by the first stop signal


def stop_requested() -> bool:
    return _STOPPED.is_set()


@contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM is taken as Ctrl-C; the signal is remembered even before Tune's handler is in place."""
    def interrupt(signum, frame) -> None:
        _STOPPED.set()
        os.kill(os.getpid(), signal.SIGINT)

    _STOPPED.clear()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopSignalCallback(Callback):
    """Wraps the SIGINT handler Tune installed before calling its callbacks' `setup`, so that a
    stop signal is remembered and still handled by Tune (which then puts back the handler it found,
    and a second Ctrl-C stops at once, as Tune documents)."""

    def setup(self, **info) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Tune installs no handler off the main thread either
        tune_handler = signal.getsignal(signal.SIGINT)
        if not callable(tune_handler):  # SIG_IGN or SIG_DFL: nothing of Tune's to wrap
            return

        def remember(signum, frame) -> None:
            _STOPPED.set()
            tune_handler(signum, frame)

        signal.signal(signal.SIGINT, remember)
