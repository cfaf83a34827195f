"""The toy regression of Sec. 6 for the theory checks: its data, and a short training run.

``train_with_probe`` trains a network with stochastic depth through the project's own
LightningModule (``sdexp.run.module``: survival from the mode at the budget, one mask per step) and
calls a probe at initialisation and after every epoch, for the quantities the paper follows
through training (eq. 6, Theorem 2, Figs. 4 and 5).
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
from torch import Tensor

from sdexp.data import ToyDataModule
from sdexp.models import ResidualNetwork
from sdexp.run.module import LightningData, StochasticDepthModule
from sdexp.survival import MODES

Probe = Callable[[int, ResidualNetwork], None]  # (epoch, model)


def toy_data(num_inputs: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """``num_inputs`` inputs x ~ N(0, I_d) and targets sin(beta^T x) (``ToyDataModule``)."""
    data = ToyDataModule(dim=dim, n_train=num_inputs, n_val=0, n_test=1, data_seed=seed)
    data.setup()
    return data.splits["train"].inputs, data.splits["train"].targets


class EpochProbe(pl.Callback):
    """Calls ``probe(epoch, model)`` before training (epoch 0) and after each epoch."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def on_train_start(self, trainer: pl.Trainer, module: StochasticDepthModule) -> None:
        self.probe(0, module.model)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: StochasticDepthModule) -> None:
        self.probe(trainer.current_epoch + 1, module.model)


def train_with_probe(
    model: ResidualNetwork,
    mode: str,
    budget: float,
    datamodule: ToyDataModule,
    epochs: int,
    optimizer: Callable,
    probe: Probe,
) -> None:
    """Train ``model`` on the toy task with stochastic depth (``mode`` at ``budget``) for
    ``epochs`` epochs, without validation, checkpoints or logger; ``probe`` sees every epoch
    (only the initial state when ``epochs`` is 0)."""
    if epochs == 0:
        probe(0, model)
        return
    module = StochasticDepthModule(
        model,
        MODES[mode](),
        budget,
        datamodule.task,
        datamodule.num_outputs,
        optimizer=optimizer,
        dropped_blocks="frozen",  # the setting the theory figures in README were made with
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[EpochProbe(probe)],
    )
    trainer.fit(module, datamodule=LightningData(datamodule))
