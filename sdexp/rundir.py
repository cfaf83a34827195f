"""A run's output directory: one live run at a time, and only the run's own files.

Before a run trains, ``claim`` takes the directory's lock and checks what an earlier run left
there against the run's identity (``sdexp.results.RunKey``):

- ``run.lock`` is held (``flock``) by the live run. The kernel releases it when the process
  ends, however it ends (SIGKILL, preemption, a crash), so a dead run never keeps it; a second
  run into a directory that a live one holds stops with a message naming the holder.
- ``results.json`` and ``checkpoints/last.ckpt`` of another identity stop the run with one line
  that names the keys that differ and the two ways out (another output directory, or
  ``overwrite=true``, which discards them). A run resumes only from a checkpoint of its own
  identity, which ``RunIdentity`` writes into every checkpoint.
- an unreadable ``results.json`` is reported and counts as not finished; an unreadable
  ``last.ckpt`` stops the run with one line naming the file and the remedy.

Planning a sweep reads these files, so this module stays free of Lightning: the Lightning side
(``RunIdentity``, ``AtomicCheckpointIO``) is ``sdexp.checkpoints``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

import torch

from sdexp.errors import ConfigError
from sdexp.results import RESULTS_FILE, RunKey, UnreadableResult, differences, read_result

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
IDENTITY = "sdexp_run"  # the checkpoint entry RunIdentity writes: {"identity", "config"}

#: How a run directory is named on the command line, for the messages.
DIR_OPTION = "hydra.run.dir"
WAYS_OUT = (
    "choose another output directory (hydra.run.dir, or hydra.sweep.dir for a sweep), or pass "
    "overwrite=true to discard the earlier run's results.json and checkpoints"
)


# --- the lock ------------------------------------------------------------------------------------


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/run.lock`` while the block runs; ConfigError if a live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise ConfigError(
                DIR_OPTION,
                f"{run_dir} is in use by a live run ({holder}): wait for it to end, or choose "
                f"another output directory",
            ) from None
        except OSError as error:  # a file system without locks: go on, and say so
            log.warning(f"{path}: cannot lock ({error}); two runs into {run_dir} would collide")
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


# --- what an earlier run left ---------------------------------------------------------------------


class Conflict(NamedTuple):
    """A file in a run directory that the run cannot use, and why."""

    file: str
    why: str


def stored_identity(path: Path) -> dict | None:
    """The identity a checkpoint stores (None if it has none); raises if it is unreadable."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint.get(IDENTITY) if isinstance(checkpoint, dict) else None


def conflicts(run_dir: Path, key: RunKey, config: dict) -> list[Conflict]:
    """The files of other runs in ``run_dir``: a results.json or last.ckpt of another identity,
    a checkpoint without one or that cannot be read. An unreadable results.json is not one: it
    is reported and counts as not finished (the run writes a new one)."""
    found = []
    try:
        result = read_result(run_dir)
    except UnreadableResult as error:
        log.warning(f"{error}; treated as not finished")
        result = None
    if result is not None and result.key.identity != key.identity:
        found.append(
            Conflict(RESULTS_FILE, f"of another run ({differences(result.config, config)})")
        )
    last = run_dir / CHECKPOINTS / LAST
    if last.exists():
        name = f"{CHECKPOINTS}/{LAST}"
        try:
            stored = stored_identity(last)
        except Exception as error:  # truncated, corrupt, not a checkpoint
            found.append(Conflict(name, f"unreadable ({type(error).__name__}: {str(error)[:160]})"))
        else:
            if stored is None:
                found.append(Conflict(name, "written without a run identity (sdexp < 0.2)"))
            elif stored["identity"] != key.identity:
                why = f"of another run ({differences(stored['config'], config)})"
                found.append(Conflict(name, why))
    return found


def discard(run_dir: Path) -> None:
    """Remove an earlier run's results.json and checkpoints (``overwrite=true``)."""
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


def conflict_error(run_dir: Path, found: list[Conflict]) -> ConfigError:
    """One line: the directory, the first file it cannot use and why, the ways out."""
    file, why = found[0]
    more = f" (and {len(found) - 1} more file)" if len(found) > 1 else ""
    return ConfigError(DIR_OPTION, f"{run_dir}: {file} is {why}{more}: {WAYS_OUT}")


@contextmanager
def claim(
    run_dir: Path, key: RunKey, config: dict, overwrite: bool, lock: bool = True
) -> Iterator[Path | None]:
    """Lock ``run_dir`` (unless ``lock`` is False: the other ranks of a DDP run) and make sure
    it holds nothing of another run; yield the checkpoint to resume from, if any."""
    with run_lock(run_dir) if lock else nullcontext():
        found = conflicts(run_dir, key, config)
        if found and not overwrite:
            raise conflict_error(run_dir, found)
        if found:
            log.warning(f"{run_dir}: overwrite=true, discarding {', '.join(c.file for c in found)}")
            discard(run_dir)
        last = run_dir / CHECKPOINTS / LAST
        yield last if last.exists() else None
