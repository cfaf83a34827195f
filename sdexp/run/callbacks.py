"""Lightning callbacks of a run: what it records and prints around the training steps."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch

log = logging.getLogger("sdexp")


class EpochTimer(pl.Callback):
    """Seconds per training epoch, validation excluded (``train/epoch_time_s``, ``times``), kept
    in every checkpoint so that a resumed run's ``times`` cover the whole run."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = self._validation = self._validation_start = 0.0

    def _now(self, trainer: pl.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)  # once per epoch, not per step
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._validation = self._now(trainer), 0.0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._validation_start = self._now(trainer)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._validation += self._now(trainer) - self._validation_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(self._now(trainer) - self._start - self._validation)
        pl_module.log("train/epoch_time_s", self.times[-1], sync_dist=True)  # mean over ranks

    def state_dict(self) -> dict:
        return {"times": list(self.times)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.times = list(state_dict["times"])


class ProgressLines(pl.Callback):
    """Without a terminal, where Lightning's progress bar would write a few hundred bytes per
    step: a short line per epoch, at most one every ``every_s`` seconds and always the last:
    ``epoch 12/164: train/loss 0.512, val/error 8.31, 21.3 s/epoch``; under DDP, rank 0's."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()
        self._epoch_start = self._last

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now, epoch = time.monotonic(), trainer.current_epoch + 1
        if not trainer.is_global_zero:  # under DDP every rank runs it: rank 0 prints
            return
        if now - self._last < self.every_s and epoch < trainer.max_epochs:
            return
        self._last = now
        metrics = trainer.callback_metrics  # values of this epoch; read once per line
        shown = [
            f"{name} {metrics[name].item():.4g}"
            for name in ("train/loss", f"val/{pl_module.metric_name}")
            if name in metrics
        ]
        seconds = now - self._epoch_start
        log.info(f"epoch {epoch}/{trainer.max_epochs}: {', '.join(shown)}, {seconds:.1f} s/epoch")
