"""The run's checkpoints, on Lightning's side: each carries the run's identity
(``sdexp.rundir`` checks it before resuming), and a failed write fails the run."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from sdexp.results import RunKey
from sdexp.rundir import IDENTITY


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written: the run fails rather than go on without it."""


class RunIdentity(pl.Callback):
    """Writes the run's identity and identity config into every checkpoint."""

    def __init__(self, key: RunKey, config: dict) -> None:
        self.key, self.config = key, config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[IDENTITY] = {"identity": self.key.identity, "config": self.config}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, then renamed over it.

    Hand-written because Lightning 2.6's save (``lightning_fabric.utilities.cloud_io._atomic_save``)
    swallows a ``PermissionError``: a run that cannot write its checkpoints would go on without
    them, report success, and a preempted job would silently start over. Here every error
    fails the run (``CheckpointWriteError``, with the path)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as error:  # torch.save's writer raises RuntimeError
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(f"could not write the checkpoint {path}: {error}") from error
