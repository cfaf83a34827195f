"""The LightningModule: a residual network trained with stochastic depth at a fixed budget.

At the start of a fresh fit the survival probabilities p are chosen by the mode at the budget
(SenseMode first measures the sensitivities on ``mode.batches`` training batches at
initialisation); they are stored in the model's gate, so a resumed run keeps them.

Training draws one mask per step (``train/sampled_depth`` is its depth L_delta); validation and
test evaluate the average network. Metrics: ``train/loss``, ``{val,test}/loss`` and
``{val,test}/error`` (%, classification) or ``{val,test}/mse`` (regression).

A dropped block gets no gradient. What the optimizer then does to its parameters is the
recipe's ``dropped_blocks``: ``decay`` zero-fills the gradients (``zero_grad(set_to_none=False)``,
what PyTorch 1.x did in the code the paper builds on), so SGD still applies weight decay and
momentum to them, as Huang et al.'s Torch code did; ``frozen`` leaves them None, and PyTorch's
optimisers skip such parameters: only the sampled subnetwork moves, as the paper describes SD
("SD ... only updates the weights of the resulting subnetwork at each training iteration",
Sec. 1).

Evaluation metrics are torchmetrics states (the error, and the mean loss weighted by batch
size), summed over the DDP ranks: each evaluated example counts once. ``test_stage`` names the
test metrics (``test/*`` for the final model, ``test_best/*`` for the best checkpoint).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanSquaredError

from sdexp.data import METRIC
from sdexp.depth import depth_variance, expected_depth
from sdexp.loggers import log_layer_profile
from sdexp.models import ResidualNetwork, compile_branches
from sdexp.sensitivity import sensitivities
from sdexp.survival import Mode

log = logging.getLogger("sdexp")


class EpochTimer(pl.Callback):
    """Seconds per training epoch, validation excluded (``train/epoch_time_s``, ``times``)."""

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


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def loss_function(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    return F.cross_entropy if task == "classification" else F.mse_loss


def stage_metric(task: str, num_outputs: int) -> tuple[str, Metric]:
    """The metric reported per stage (``METRIC``): test error in % or the mean squared error."""
    if task == "classification":
        error = (1 - MulticlassAccuracy(num_classes=num_outputs, average="micro")) * 100
        return METRIC[task], error
    return METRIC[task], MeanSquaredError()


@dataclass
class Speed:
    """``speed.*``: fast paths for accelerators; the numbers agree with the plain path up to
    float rounding."""

    channels_last: bool = False  # NHWC memory format for the convolutions (tensor cores)
    compile_blocks: bool = False  # torch.compile each residual branch; the skip stays eager


class StochasticDepthModule(pl.LightningModule):
    def __init__(
        self,
        model: ResidualNetwork,
        mode: Mode,
        budget: float,
        task: str,
        num_outputs: int,
        optimizer: Callable,
        scheduler: Callable | None = None,
        dropped_blocks: Literal["decay", "frozen"] = "decay",
        speed: Speed | None = None,
    ) -> None:
        super().__init__()
        self.model, self.mode, self.budget = model, mode, budget
        self.dropped_blocks = dropped_blocks
        self.speed = speed or Speed()
        if self.speed.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.speed.compile_blocks:
            compile_branches(model)
        self.loss_fn = loss_function(task)
        self.metric_name, self.val_metric = stage_metric(task, num_outputs)
        _, self.test_metric = stage_metric(task, num_outputs)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.test_stage = "test"
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def forward(self, x: Tensor, delta: Tensor | None = None) -> Tensor:
        if self.speed.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x, delta)

    # --- survival probabilities ----------------------------------------------------------

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None:
            return  # a resumed run keeps the p stored in its checkpoint, and logged them before
        self.choose_survival()
        gate = self.model.gate
        summary = {
            "expected_depth": expected_depth(gate.survival),
            "depth_variance": depth_variance(gate.survival),
            "survival": gate.survival,
            "sensitivity": gate.sensitivity,
        }
        for logger in self.loggers:
            logger.log_hyperparams(summary)
            log_layer_profile(logger, "survival", gate.survival)
            if gate.sensitivity is not None:
                log_layer_profile(logger, "sensitivity", gate.sensitivity)

    def choose_survival(self) -> None:
        sensitivity = None
        if self.mode.needs_sensitivity:
            batches = self.training_batches(self.mode.batches)
            sensitivity = sensitivities(self.model, batches, self.loss_fn)
            # Under DDP each rank measured its own batches: all take the mean over the ranks,
            # so that they compute the same p and draw the same masks (a no-op on one device).
            sensitivity = self.trainer.strategy.reduce(sensitivity, reduce_op="mean").cpu()
        survival = self.mode.survival(self.budget, self.model.num_blocks, sensitivity)
        self.model.gate.set_survival(
            survival.tolist(), None if sensitivity is None else sensitivity.tolist()
        )

    def training_batches(self, count: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The first ``count`` training batches, on this module's device and preprocessed."""
        datamodule = self.trainer.datamodule
        for batch in itertools.islice(datamodule.train_dataloader(), count):
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            yield datamodule.on_after_batch_transfer(batch, 0)

    # --- steps -------------------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        # Checking finiteness waits for the device: do it only on steps that log anyway.
        if self.global_step % self.trainer.log_every_n_steps == 0 and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log("train/sampled_depth", float(sum(self.model.gate.last_mask)), batch_size=len(y))
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metric: Metric, loss: Metric):
        x, y = batch
        out = self(x)
        metric.update(out, y)
        loss.update(self.loss_fn(out, y), weight=len(y))
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/{self.metric_name}", metric, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metric, self.val_loss)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_stage, self.test_metric, self.test_loss)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """``decay``: zero-filled gradients, so a block this step drops is still decayed and moved
        by momentum; ``frozen``: None, so the optimizer skips it."""
        optimizer.zero_grad(set_to_none=self.dropped_blocks == "frozen")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


class ProgressLines(pl.Callback):
    """A short line per epoch, at most one every ``every_s`` seconds and always the last one:
    ``epoch 12/164: train/loss 0.512, val/error 8.31, 21.3 s/epoch``."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()
        self._epoch_start = self._last

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now, epoch = time.monotonic(), trainer.current_epoch + 1
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
