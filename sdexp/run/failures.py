"""How a command fails: one line, an exit status, no traceback.

Bad input (``sdexp.errors.ConfigError``) exits with status 2, any other error with 1, a stop by
SIGINT or SIGTERM (``Stopped``) with 128 + the signal's number. A line the run already wrote is
not repeated (``mark_reported``). No torch or Lightning here: the command line loads it first.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sdexp.errors import ConfigError

log = logging.getLogger("sdexp")

#: An exception whose line the run has written already (``mark_reported``).
_REPORTED = "_sdexp_reported"


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal. A KeyboardInterrupt, so that whatever stops on Ctrl-C
    (Lightning's loops, a sweep) stops on SIGTERM alike."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal_name(signum)}")

    def __reduce__(self):
        return type(self), (self.signum,)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class JobEnded(Exception):
    """A sweep's job that its cluster ended without a result; ``state`` is SLURM's (``sacct``),
    ``log`` the path of the job's log (where SLURM and submitit say what ended it)."""

    def __init__(self, job_id: str, state: str, log: str) -> None:
        super().__init__(f"SLURM job {job_id} ended {state} without a result; its log: {log}")
        self.job_id, self.state, self.log = job_id, state, log

    def __reduce__(self):
        return type(self), (self.job_id, self.state, self.log)


def signal_name(signum: int) -> str:
    name = signal.Signals(signum).name
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


#: The signal that stopped this process, if one did (Lightning turns a KeyboardInterrupt inside
#: ``Trainer.fit`` into ``sys.exit(1)``; ``stop_signal`` still says what happened).
_received: int | None = None
#: Whether a signal is only recorded, to be raised at the next ``raise_if_stopped``.
_deferring = False
#: Whether the stop's line was written.
_stop_reported = False


def stop_signal() -> int | None:
    return _received


def _stop(signum: int, frame) -> None:
    global _received
    _received = signum
    if not _deferring:
        raise Stopped(signum)


@contextmanager
def stop_on_signals(defer: bool = False, restore: bool = True) -> Iterator[None]:
    """Raise ``Stopped`` on SIGINT and SIGTERM while the block runs, where no one else handles
    them (Python's default handler, or submitit's bypass: in a SLURM job submitit ignores
    SIGTERM, and a run would train on into SLURM's SIGKILL).

    ``defer``: the signal is recorded and raised where the code can stop (``raise_if_stopped``):
    raised at an arbitrary point of Hydra's composition, it would leave a half-made config and
    become another error. ``restore=False``: the handler stays set, deferring, as the process
    exits: a signal raised into the interpreter's finalization is a fatal error (status 134)."""
    global _received, _deferring
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    replaced = {}
    if threading.current_thread() is threading.main_thread():
        for signum, default in defaults.items():
            handler = signal.getsignal(signum)
            bypass = getattr(handler, "__qualname__", "") == "SignalHandler.bypass"  # submitit's
            if handler in (default, None) or bypass:
                replaced[signum] = signal.signal(signum, _stop)
    if replaced:  # the outermost block: a signal before it is not this block's
        _received = None
    deferring, _deferring = _deferring, defer
    try:
        if not defer:
            raise_if_stopped()
        yield
    finally:
        _deferring = deferring if restore else True
        for signum, handler in replaced.items() if restore else ():
            signal.signal(signum, handler)


def raise_if_stopped() -> None:
    """Raise ``Stopped`` if a signal came and was deferred, or swallowed on the way: triton's
    import, inside ``import pytorch_lightning``, catches every exception (it took 5 of 6
    SIGTERMs at start-up, and the run trained to its end)."""
    if _received is not None:
        raise Stopped(_received)


def mark_reported(error: BaseException) -> BaseException:
    """``error``, marked as written already (the run's failure line); returns it."""
    global _stop_reported
    setattr(error, _REPORTED, True)
    _stop_reported = _stop_reported or isinstance(error, Stopped)
    return error


def find_config_error(error: BaseException | None) -> ConfigError | None:
    """The ConfigError behind ``error``, also when Hydra's instantiate wrapped it."""
    while error is not None:
        if isinstance(error, ConfigError):
            return error
        error = error.__cause__ or error.__context__
    return None


def flat_message(error: BaseException) -> str:
    """``str(error)`` on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def one_line(error: BaseException) -> str:
    """``error`` as one line: its type and message (a ConfigError: the option and message)."""
    if isinstance(error, ConfigError):
        return flat_message(error)
    text = flat_message(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextmanager
def failure_policy(in_sweep: bool = False) -> Iterator[None]:
    """Around a task function: an error is one line and exit status 2 (bad input) or 1; a stop
    by a signal is one line and goes on as ``Stopped``. ``in_sweep``: the error goes on to the
    launcher after its line, which counts the job failed and goes on."""
    try:
        yield
    except Stopped as stop:
        if not getattr(stop, _REPORTED, False):
            log.error(str(stop))
        mark_reported(stop)
        raise
    except Exception as error:  # noqa: BLE001 - the policy: every error is one line
        if (signum := stop_signal()) is not None:  # raised by the stop, part-way (an import)
            stop = Stopped(signum)
            log.error(str(stop))
            raise mark_reported(stop) from None
        config_error = find_config_error(error)
        if not getattr(error, _REPORTED, False):
            log.error(one_line(config_error or error))
        if in_sweep:
            mark_reported(error)
            raise
        sys.exit(2 if config_error is not None else 1)


def exit_on_stop(main) -> None:
    """Run a command's ``main`` and exit with 128 + the signal's number where a signal stopped
    it, after its one line where no one wrote it. An exit with that status already (a sweep's,
    after its summary) is left as it is."""
    try:
        main()
    except (Stopped, SystemExit) as stop:
        signum = stop_signal()
        if signum is None or getattr(stop, "code", None) == 128 + signum:
            raise
    if (signum := stop_signal()) is not None:
        if not _stop_reported:
            print(f"error: stopped by {signal_name(signum)}", file=sys.stderr, flush=True)
        sys.exit(128 + signum)
