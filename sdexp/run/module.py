"""The LightningModule: a residual network trained with stochastic depth at a fixed budget, and
the LightningDataModule that hands it a dataset of ``sdexp.data``.

At the start of a fresh fit the mode chooses the survival probabilities p at the budget; the
gate stores them, so a resumed run keeps them. Training draws one mask per step; validation and
test evaluate the average network.

A dropped block gets no gradient; the recipe's ``dropped_blocks`` says what the optimizer does
to its parameters (``sdexp.recipe.StepGradients``): ``decay``, zero gradients (PyTorch 1.x's
``zero_grad`` in the code the paper builds on), so SGD still applies weight decay and momentum,
as Huang et al.'s Torch code did; ``frozen``, None, so only the sampled subnetwork moves ("SD
... only updates the weights of the resulting subnetwork at each training iteration", Sec. 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanSquaredError

from sdexp.loader import Batch, EpochLoader, TensorDataModule
from sdexp.models import ResidualNetwork, compile_branches
from sdexp.recipe import StepGradients, start_momentum
from sdexp.results import METRIC
from sdexp.run.config import Speed
from sdexp.run.graphs import GraphedSteps, MakeGraphed
from sdexp.sensitivity import sensitivity_samples, summarize
from sdexp.subnetwork import gate_record
from sdexp.survival import Mode


class LightningData(pl.LightningDataModule):
    """A dataset of ``sdexp.data`` as a Trainer takes it: each hook calls the dataset's (which
    are no ``LightningDataModule``s, so that planning a sweep imports no Lightning)."""

    def __init__(self, data: TensorDataModule) -> None:
        super().__init__()
        self.data = data

    def attached(self) -> TensorDataModule:
        self.data.trainer = self.trainer
        return self.data

    def prepare_data(self) -> None:
        self.attached().prepare_data()

    def setup(self, stage: str) -> None:
        self.attached().setup(stage)

    def train_dataloader(self) -> EpochLoader:
        return self.attached().train_dataloader()

    def val_dataloader(self) -> EpochLoader:
        return self.attached().val_dataloader()

    def test_dataloader(self) -> EpochLoader:
        return self.attached().test_dataloader()

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        return self.data.on_after_batch_transfer(batch, dataloader_idx)


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
        make_graphed: MakeGraphed | None = None,
    ) -> None:
        """``make_graphed``: what captures the graphs (None: ``make_graphed_callables``)."""
        super().__init__()
        self.model, self.mode, self.budget = model, mode, budget
        self.dropped_blocks = dropped_blocks
        self.speed = speed or Speed()
        if self.speed.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.speed.compile_blocks and not self.speed.cuda_graphs:
            compile_branches(model)  # with the graphs: their pieces are compiled instead
        self.loss_fn = loss_function(task)
        self.metric_name, self.val_metric = stage_metric(task, num_outputs)
        _, self.test_metric = stage_metric(task, num_outputs)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.test_stage = "test"
        self.task = task
        self.predictions: dict[str, dict[str, list]] = {}  # by test stage (Predictions)
        self.test_rows: Tensor | None = None  # the test examples of this rank, in order
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.make_graphed = make_graphed
        self.graphs: GraphedSteps | None = None  # captured at the first full training batch
        self.gradients: StepGradients | None = None

    def forward(self, x: Tensor, delta: Tensor | None = None) -> Tensor:
        return self.model(self.network_input(x), delta)

    def network_input(self, x: Tensor) -> Tensor:
        if self.speed.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None:
            return  # a resumed run keeps the p stored in its checkpoint, and logged them before
        self.choose_survival()
        for logger in self.loggers:  # a W&B logger also charts the per-layer lists
            logger.log_hyperparams(gate_record(self.model.gate))

    def choose_survival(self) -> None:
        sensitivity = error = None
        if self.mode.needs_sensitivity:
            batches = self.training_batches(self.mode.batches)
            estimate = summarize(sensitivity_samples(self.model, batches, self.loss_fn))
            # Under DDP each rank measured its own batches: all take the mean over the ranks,
            # so that they compute the same p and draw the same masks (a no-op on one device).
            # The mean of R equal-sized means has the variance mean(se_r^2) / R.
            reduce, ranks = self.trainer.strategy.reduce, self.trainer.world_size
            sensitivity = reduce(estimate.mean, reduce_op="mean").cpu()
            if estimate.standard_error is not None:
                variance = reduce(estimate.standard_error**2, reduce_op="mean") / ranks
                error = variance.sqrt().cpu().tolist()
        survival = self.mode.survival(self.budget, self.model.num_blocks, sensitivity)
        self.model.gate.set_survival(
            survival.tolist(), None if sensitivity is None else sensitivity.tolist(), error
        )

    def training_batches(self, count: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The first ``count`` training batches, on this module's device and preprocessed."""
        datamodule = self.trainer.datamodule
        loader = datamodule.train_dataloader()
        for batch in itertools.islice(loader.stream(loader.epoch()), count):
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            yield datamodule.on_after_batch_transfer(batch, 0)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x = self.network_input(x)
        if self.speed.cuda_graphs and self.graphs is None and self.full_batch(len(y)):
            self.graphs = GraphedSteps(
                self.model, self.loss_fn, x, y, self.make_graphed, self.speed.compile_blocks
            )
        if self.graphs is not None and self.graphs.matches(x, y):
            loss = self.graphs.loss(x, y)
        else:  # no graphs, or a batch of another shape (an epoch's last): eagerly
            loss = self.loss_fn(self.model(x), y)
        self.log_training(loss, len(y))
        return loss

    def full_batch(self, size: int) -> bool:
        """Whether a batch has the data module's batch size (the shape to capture)."""
        data = getattr(self.trainer.datamodule, "data", None)
        expected = getattr(data, "batch_size", None)
        return expected is None or size == expected

    def log_training(self, loss: Tensor, batch_size: int) -> None:
        """``train/loss`` and ``train/sampled_depth`` (L_delta) as CPU values, only on the steps
        Lightning logs: the only wait for the device (Lightning ``.item()``s progress-bar values
        after every batch, and makes a logged number a tensor on the device)."""
        every = self.trainer.log_every_n_steps or 50  # 0: Lightning logs nothing; check anyway
        if (self.global_step + 1) % every:
            return
        value = loss.detach().float().cpu()
        if not torch.isfinite(value):
            raise NonFiniteLossError(
                f"training loss is {value.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}"
            )
        depth = torch.tensor(float(sum(self.model.gate.last_mask)))
        self.log("train/loss", value, prog_bar=True, batch_size=batch_size)
        self.log("train/sampled_depth", depth, batch_size=batch_size)

    def _evaluate(
        self, batch: tuple[Tensor, Tensor], stage: str, metric: Metric, loss: Metric
    ) -> Tensor:
        x, y = batch
        out = self(x)
        metric.update(out, y)
        loss.update(self.loss_fn(out, y), weight=len(y))
        self.log(f"{stage}/loss", loss)
        self.log(f"{stage}/{self.metric_name}", metric, prog_bar=stage == "val")
        return out

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metric, self.val_loss)

    def on_test_epoch_start(self) -> None:
        """The rows this rank tests, in the order its batches come (``EpochLoader``)."""
        self.test_rows = self.trainer.test_dataloaders.epoch_rows(0)[:, 0]
        self.predictions[self.test_stage] = {"index": [], "target": [], "output": [], "loss": []}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        out = self._evaluate(batch, self.test_stage, self.test_metric, self.test_loss)
        self.keep_predictions(out, batch[1])

    def keep_predictions(self, out: Tensor, y: Tensor) -> None:
        """Per example: its index in the test set, target, prediction (the class, or the
        output) and loss (cross-entropy, or the squared error), on the CPU."""
        kept = self.predictions[self.test_stage]
        start = sum(len(i) for i in kept["index"])
        kept["index"].append(self.test_rows[start : start + len(y)])
        if self.task == "classification":
            output, loss = out.argmax(1), F.cross_entropy(out, y, reduction="none")
        else:
            output = out.reshape(-1)
            difference = output - y.reshape(-1)
            loss = difference * difference
        for name, value in (("target", y.reshape(-1)), ("output", output), ("loss", loss)):
            kept[name].append(value.detach().cpu())

    def on_test_epoch_end(self) -> None:
        """Every rank's predictions, on every rank, sorted by index (each example once: the
        ranks' shares of the test set are not padded)."""
        local = {k: torch.cat(v).numpy() for k, v in self.predictions[self.test_stage].items()}
        if self.trainer.world_size > 1:
            shares: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shares, local)
            local = {k: np.concatenate([share[k] for share in shares]) for k in local}
        order = np.argsort(local["index"], kind="stable")
        self.predictions[self.test_stage] = {k: v[order] for k, v in local.items()}

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer) -> None:
        """Before the backward pass: dropped blocks' gradients as ``dropped_blocks`` says."""
        if self.gradients is None:
            self.gradients = StepGradients(self.model, self.dropped_blocks)
        self.gradients.clear()

    def configure_optimizers(self):
        fused = {"fused": True} if self.speed.fused_optimizer else {}
        optimizer = self.optimizer_factory(self.parameters(), **fused)
        if self.speed.fused_optimizer:
            start_momentum(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
