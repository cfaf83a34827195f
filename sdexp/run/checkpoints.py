"""The run's checkpoints, on Lightning's side: ``last.ckpt`` at the end of every epoch and
``best.ckpt`` by validation metric, each carrying the run's identity (``sdexp.run.directory`` checks
it before resuming) and the code that wrote it (``sdexp.provenance``); a failed write fails the run
and leaves no temporary file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import ModelCheckpoint

from sdexp.provenance import current_code
from sdexp.results import RunKey
from sdexp.run.directory import CHECKPOINTS, IDENTITY, LAST

BEST = "best.ckpt"


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written: the run fails rather than go on without it."""


class RunIdentity(pl.Callback):
    """Writes the run's identity, identity config and code into every checkpoint."""

    def __init__(self, key: RunKey, config: dict) -> None:
        self.key, self.config = key, config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        code = current_code().to_dict()
        checkpoint[IDENTITY] = {"identity": self.key.identity, "config": self.config, "code": code}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, then renamed over it.
    Hand-written because Lightning 2.6's ``_atomic_save`` swallows a ``PermissionError``: a run
    would go on without checkpoints. ``saved``: the epoch of each checkpoint file written."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, int] = {}

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Serialised in memory, then written: torch's own writer reports a full disk as
            # "unexpected pos ..."; Python's write says "No space left on device".
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            tmp.write_bytes(buffer.getbuffer())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as error:  # torch.save's writer raises RuntimeError
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(f"could not write the checkpoint {path}: {error}") from error
        except BaseException:  # a signal (Stopped), mid-write
            tmp.unlink(missing_ok=True)
            raise
        self.saved[path.name] = checkpoint.get("epoch", -1)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint in the run's own, checked ``checkpoints/``: without the
    warning that the folder is not empty, and with the stored paths of a run directory that
    moved re-rooted in its folder (Lightning would keep the old ones)."""

    @property
    def state_key(self) -> str:
        # Lightning keys a callback's state by its class name: keep ModelCheckpoint's, so that
        # checkpoints written with a plain ModelCheckpoint resume with their best score.
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # ModelCheckpoint.setup with the dirpath always given, less the not-empty warning.
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        self._fs = get_filesystem(self.dirpath)

    def load_state_dict(self, state_dict: dict) -> None:
        stored = state_dict.get("dirpath")
        if stored is not None and stored != self.dirpath:

            def here(path):
                return str(Path(self.dirpath, Path(path).name)) if path else path

            paths = ("best_model_path", "kth_best_model_path", "last_model_path")
            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{name: here(state_dict.get(name)) for name in paths},
                "best_k_models": {
                    here(p): v for p, v in (state_dict.get("best_k_models") or {}).items()
                },
            }
        super().load_state_dict(state_dict)


def checkpointing(run_dir: Path, metric: str, validate: bool) -> list[RunCheckpoint]:
    """``last.ckpt`` at the end of every epoch and, with validation, ``best.ckpt`` by the
    validation metric, first (saved before ``last``, whose state holds the best score). One
    ModelCheckpoint with ``monitor`` and ``save_last`` writes ``last`` only beside a new best."""
    folder = run_dir / CHECKPOINTS
    last = RunCheckpoint(
        dirpath=folder, filename=Path(LAST).stem, save_top_k=1, enable_version_counter=False
    )
    if not validate:
        return [last]
    best = RunCheckpoint(
        dirpath=folder,
        filename=Path(BEST).stem,
        monitor=f"val/{metric}",
        mode="min",
        enable_version_counter=False,
    )
    return [best, last]
