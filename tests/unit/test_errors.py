"""Signals and errors (``sdexp.run.failures``): what stops a run, in process (through the command
line: tests/e2e/test_faults.py)."""

from __future__ import annotations

import os
import signal

import pytest

from sdexp.run.failures import Stopped, stop_on_signals


def test_a_signal_raises_stopped_where_nobody_else_handles_it():
    """SIGTERM (a real one) raises Stopped with exit status 143; a handler someone else set
    (submitit's, which lets its USR2 handler requeue the job) stays, and so does the old one
    after the block."""
    with stop_on_signals(), pytest.raises(Stopped) as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the next bytecode
    assert stop.value.exit_status == 143 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def submitit(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, submitit)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGTERM) is submitit
    finally:
        signal.signal(signal.SIGTERM, previous)
