"""A run's output directory: one live run at a time, and only the run's own files.

``claim`` takes the directory's lock (an ``flock``, which the kernel drops however the process
ends) and refuses, in one line, files of another run identity (``overwrite=true`` discards them);
a run resumes only from a checkpoint of its own identity.

Hydra writes into a run's directory before the task starts, with no hook in between, so a
refused run would change the run that is there. Its record (``.hydra/``) is off and written by
``keep_hydra_record`` once the run owns the directory; its log waits in memory
(``sdexp.run.console.RunLogFile``); ``MakeRunDir`` creates the directory and ``remove_unused``
removes what a refused command made. No Lightning here: planning a sweep reads these files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sdexp.errors import ConfigError
from sdexp.results import (
    PREDICTIONS_FILE,
    RESULTS_FILE,
    RunKey,
    UnreadableResult,
    differences,
    read_result,
    write_atomically,
)

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
UNREADABLE = ".unreadable"  # the suffix of a checkpoint moved aside
IDENTITY = "sdexp_run"  # the checkpoint entry RunIdentity writes: {"identity", "config", "code"}
DIR_OPTION = "hydra.run.dir"
WAYS_OUT = (
    "choose another output directory (hydra.run.dir, or hydra.sweep.dir for a sweep), or pass "
    "overwrite=true to discard the earlier run's results.json and checkpoints"
)


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError in the block names ``path`` where it names no file (a full disk's does not)."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Callable[[], None]]:
    """Hold ``run_dir/run.lock`` while the block runs; ConfigError if a live process holds it.
    Yields ``hold``, which writes this process in as the holder once the run may go on."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    lock = FileLock(path, timeout=0)  # an flock, which the kernel drops when the process ends

    def hold() -> None:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        with naming(path):
            path.write_text(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")

    try:
        lock.acquire()
    except Timeout:
        holder = path.read_text().strip() or "another process"
        raise ConfigError(
            DIR_OPTION,
            f"{run_dir} is in use by a live run ({holder}): wait for it to end, or choose "
            f"another output directory",
        ) from None
    except OSError as error:  # a file system without locks: go on, and say so
        log.warning(f"{path}: cannot lock ({error}); two runs into {run_dir} would collide")
    try:
        yield hold
    finally:
        lock.release()


class Conflict(NamedTuple):
    """A file the run cannot use, and why; ``unreadable``: a checkpoint moved aside, else a stop."""

    file: str
    why: str
    unreadable: bool = False


def check_kinds(run_dir: Path) -> None:
    """ConfigError if ``results.json`` is not a file or ``checkpoints`` not a directory."""
    for name, is_kind, kind, what in (
        (RESULTS_FILE, Path.is_file, "not a file", "its results"),
        (CHECKPOINTS, Path.is_dir, "not a directory", "its checkpoints"),
    ):
        path = run_dir / name
        if path.exists() and not is_kind(path):
            raise ConfigError(
                DIR_OPTION,
                f"{path} is {kind}, where the run writes {what}: move it away, or choose another "
                f"output directory",
            )


def examine(run_dir: Path, key: RunKey, config: dict) -> tuple[list[Conflict], int | None]:
    """The files of other runs in ``run_dir`` (not an unreadable results.json: not finished),
    and the number of epochs ``last.ckpt`` holds if it is the run's own."""
    found, epochs = [], None
    try:
        result = read_result(run_dir)
    except UnreadableResult:
        result = None
    if result is not None and result.key.identity != key.identity:
        found.append(
            Conflict(RESULTS_FILE, f"of another run ({differences(result.config, config)})")
        )
    last = run_dir / CHECKPOINTS / LAST
    if last.exists():
        import torch  # here only: a SLURM job loads this module before submitit sets its handlers

        name = f"{CHECKPOINTS}/{LAST}"
        try:
            checkpoint = torch.load(last, map_location="cpu", weights_only=False)
            if not isinstance(checkpoint, dict):
                raise TypeError(f"a {type(checkpoint).__name__}, not a checkpoint")
        except Exception as error:  # truncated, corrupt, not a checkpoint
            why = f"unreadable ({type(error).__name__}: {str(error)[:160]})"
            return [*found, Conflict(name, why, unreadable=True)], None
        stored = checkpoint.get(IDENTITY)
        if stored is None:
            found.append(Conflict(name, "written by an older sdexp"))
        elif stored["identity"] != key.identity:
            why = f"of another run ({differences(stored['config'], config)})"
            found.append(Conflict(name, why))
        else:
            epochs = checkpoint.get("epoch", -1) + 1
    return found, epochs


def discard(run_dir: Path) -> None:
    """Remove an earlier run's results.json, predictions and checkpoints (``overwrite=true``)."""
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)
    (run_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.unreadable`` (``.unreadable.2``, ... if taken); returns it."""
    aside, number = path.with_name(path.name + UNREADABLE), 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}{UNREADABLE}.{number}")
    os.rename(path, aside)
    return aside


class Resume(NamedTuple):
    """The checkpoint a run resumes from, and how many epochs it holds."""

    path: Path
    epochs: int


#: A temporary file of an atomic write, ``.<name>.<pid>.tmp`` beside its target.
TEMPORARY = re.compile(r"\..+\.(\d+)\.tmp")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove the temporary files of writes killed mid-way (SIGKILL, a node down). The caller
    holds the directory's lock: every process that wrote into it is dead."""
    for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / ".hydra"):
        for path in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
            if (found := TEMPORARY.fullmatch(path.name)) and int(found[1]) != os.getpid():
                path.unlink(missing_ok=True)
                log.info(f"removed {path}, left by process {found[1]} killed while writing it")


@contextmanager
def claim(
    run_dir: Path,
    key: RunKey,
    config: dict,
    overwrite: bool,
    lock: bool = True,
    fresh: bool = False,
) -> Iterator[Resume | None]:
    """Lock ``run_dir`` (not on a DDP run's other ranks), refuse another run's files, and yield
    the checkpoint to resume from, if any; ``fresh``: discard the run's own (``rerun_other_code``).
    A refused run leaves the directory as it was."""
    with run_lock(run_dir) if lock else nullcontext() as hold:
        found, epochs = examine(run_dir, key, config)
        others = [c for c in found if not c.unreadable]
        if others and not overwrite:  # one line: the first file, why, the ways out
            more = f" (and {len(others) - 1} more file)" if len(others) > 1 else ""
            why = f"{others[0].file} is {others[0].why}{more}"
            raise ConfigError(DIR_OPTION, f"{run_dir}: {why}: {WAYS_OUT}")
        if hold is not None:
            hold()
            remove_stale_temporaries(run_dir)
        last = run_dir / CHECKPOINTS / LAST
        if others:
            log.warning(f"{run_dir}: overwrite=true, discarding {', '.join(c.file for c in found)}")
            discard(run_dir)
        elif found and lock:  # rank 0 moves it; the other ranks of a DDP run start over too
            aside = move_aside(last)
            log.warning(
                f"{last} is {found[0].why}: moved aside to {aside.name}, and the run starts over"
            )
        if fresh and lock:
            discard(run_dir)
        yield Resume(last, epochs) if epochs is not None and last.exists() and not fresh else None


def keep_hydra_record(run_dir: Path, cfg: DictConfig) -> None:
    """Hydra's record of the command (``.hydra/``), once the run owns ``run_dir``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.instance().cfg  # the config's hydra node, as Hydra saves it
    record = {
        "config.yaml": cfg,
        "hydra.yaml": hydra,
        "overrides.yaml": OmegaConf.create(list(HydraConfig.get().overrides.task)),
    }
    for name, node in record.items():
        with naming(run_dir / ".hydra" / name):
            write_atomically(run_dir / ".hydra" / name, OmegaConf.to_yaml(node))


#: The directories this command created for its run (``MakeRunDir``), deepest first.
CREATED: list[Path] = []


def remove_unused() -> None:
    """Remove the directories made for a run that never owned its directory, while empty."""
    for path in CREATED:
        try:
            path.rmdir()
        except OSError:
            return


def cannot_create(folder: Path) -> str | None:
    """Why ``folder`` could not be created, or None, without creating anything (a dry run)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class MakeRunDir(Callback):
    """A Hydra callback: creates a run's directory before Hydra does, so that one that cannot
    be created is one line and exit status 2, not a traceback; records it in ``CREATED``."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the directory's name
        try:
            run_dir = Path(str(config.hydra.run.dir))
        finally:
            HydraConfig.instance().cfg = previous
        absolute = run_dir.absolute()
        missing = [p for p in (absolute, *absolute.parents) if not p.exists()]
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            CREATED[:] = missing
            if not os.access(run_dir, os.W_OK | os.X_OK):
                raise PermissionError(f"{run_dir} is not writable")
        except OSError as error:
            why = error.strerror if error.filename else str(error)
            where = f": {error.filename}" if error.filename else ""
            print(f"error: {DIR_OPTION}: cannot create {run_dir} ({why}{where})", file=sys.stderr)
            sys.exit(2)
