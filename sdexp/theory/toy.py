"""The toy regression of Sec. 6 for the theory checks: its data, and a short training run.

``train_with_probe`` trains through the project's own LightningModule (``sdexp.run.module``) and
calls a probe at initialisation and after every epoch (eq. 6, Theorem 2, Figs. 4 and 5).
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LambdaCallback
from torch import Tensor

from sdexp.data import ToyDataModule
from sdexp.models import ResidualNetwork, VanillaResNet
from sdexp.run.module import LightningData, StochasticDepthModule
from sdexp.survival import MODES


def toy_data(num_inputs: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """``num_inputs`` inputs x ~ N(0, I_d) and targets sin(beta^T x) (``ToyDataModule``)."""
    data = ToyDataModule(dim=dim, n_train=num_inputs, n_val=0, n_test=1, data_seed=seed)
    data.setup()
    return data.splits["train"].inputs, data.splits["train"].targets


def toy_resnet(input_shape: tuple[int], width: int, depth: int, stable: bool) -> VanillaResNet:
    """A one-output Vanilla ResNet, He-initialised from torch's global generator."""
    return VanillaResNet(input_shape, num_outputs=1, width=width, depth=depth, stable=stable)


def train_with_probe(
    model: ResidualNetwork,
    mode: str,
    budget: float,
    datamodule: ToyDataModule,
    epochs: int,
    optimizer: Callable,
    probe: Callable[[int, ResidualNetwork], None],  # (epoch, model)
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
        callbacks=[
            LambdaCallback(
                on_train_start=lambda _, module: probe(0, module.model),  # epoch 0: at init
                on_train_epoch_end=lambda run, module: probe(run.current_epoch + 1, module.model),
            )
        ],
    )
    trainer.fit(module, datamodule=LightningData(datamodule))
