"""Lightning callbacks the tests add to real runs, by name on the command line:
``+callbacks.NAME._target_=tests.callbacks.PauseOnce`` (a run imports them from the checkout)."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import torch
from pytorch_lightning import Callback


class PauseOnce(Callback):
    """Stops a run mid-epoch (before batch ``batch`` of epoch ``epoch``) and waits there to be
    killed or preempted; it writes its process id to ``<output dir>/paused`` first. A run that
    finds that file has paused before and goes on. ``seed``: pause only the run with this seed."""

    def __init__(self, epoch: int = 1, batch: int = 1, seed: int | None = None) -> None:
        self.epoch, self.batch, self.seed = epoch, batch, seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        if self.seed is not None and trainer.datamodule.data.seed != self.seed:
            return
        marker = Path(trainer.default_root_dir) / "paused"
        if marker.exists():
            return
        marker.write_text(str(os.getpid()))
        while True:  # until a signal ends the process
            time.sleep(0.05)


class CrashOnce(Callback):
    """Raises at the start of epoch ``epoch``, the first time only (a marker file in the output
    directory remembers it): a run that crashes and is started again."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        marker = Path(trainer.default_root_dir) / "crashed"
        if trainer.current_epoch == self.epoch and not marker.exists():
            marker.write_text("crashed once")
            raise RuntimeError("a crash, once")


class InterruptOnce(Callback):
    """Interrupts the run (KeyboardInterrupt, as Ctrl-C) before batch ``batch`` of epoch
    ``epoch``, the first time only (a marker file in the output directory remembers it)."""

    def __init__(self, epoch: int = 1, batch: int = 4) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        marker = Path(trainer.default_root_dir) / "interrupted"
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not marker.exists():
            marker.write_text("interrupted once")
            raise KeyboardInterrupt


class Warn(Callback):
    """Issues a Python warning when training starts: one a run does not expect."""

    def __init__(self, message: str = "a warning no run expects") -> None:
        self.message = message

    def on_train_start(self, trainer, pl_module) -> None:
        warnings.warn(self.message, UserWarning, stacklevel=1)


class RecordThreads(Callback):
    """Writes torch's intra-op thread count, as training starts, to ``<output dir>/threads``."""

    def on_train_start(self, trainer, pl_module) -> None:
        Path(trainer.default_root_dir, "threads").write_text(str(torch.get_num_threads()))


class RecordMasks(Callback):
    """Saves the gate's mask of every training step and the final parameters of this rank to
    ``<out>/rank<global rank>.pt``."""

    def __init__(self, out: str) -> None:
        self.out, self.masks = Path(out), []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.masks.append(list(pl_module.model.gate.last_mask))

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        parameters = {k: v.detach().cpu() for k, v in pl_module.named_parameters()}
        record = {"masks": self.masks, "parameters": parameters}
        record["survival"] = pl_module.model.gate.survival
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


class SendsSignal:
    """An object that sends this process ``signum`` when it is pickled."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __reduce__(self):
        os.kill(os.getpid(), self.signum)
        return (int, (0,))


class SignalWhileSaving(Callback):
    """Sends the run's own process ``signum`` (a real signal) while Lightning writes a checkpoint
    at the end of epoch ``epoch``: an object put into the checkpoint sends it as torch.save
    pickles it. The first time only (a marker file in the output directory remembers it)."""

    def __init__(self, signum: int = 2, epoch: int = 1) -> None:
        self.signum, self.epoch = signum, epoch

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        marker = Path(trainer.default_root_dir) / "signalled"
        if trainer.current_epoch == self.epoch and not marker.exists():
            marker.write_text(f"signal {self.signum} while saving")
            checkpoint["sends_signal"] = SendsSignal(self.signum)


class KillWandbService(Callback):
    """Sends SIGTERM to this run's wandb service at the start of epoch ``epoch``, as SLURM does
    to every process of a job it preempts or cancels, and goes on training."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, name, _, parent = stat.read_text().split()[:4]
            except OSError:
                continue
            if name == "(wandb-core)" and int(parent) == os.getpid():
                os.kill(int(pid), signal.SIGTERM)
                time.sleep(1)  # until it has gone
