"""The epoch loader under Lightning's loops: each epoch trains on its rows, limited batches and
validation within epochs, and a resumed fit (from an epoch's end and from its middle) trains on
the same epochs."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint

from sdexp.data import ToyDataModule
from sdexp.run.module import LightningData
from tests.helpers import cpu_trainer


class RecordBatches(pl.LightningModule):
    """A linear model that records the inputs of its training batches by epoch, and the size of
    its validation batches."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.seen: dict[int, list[torch.Tensor]] = {}
        self.validated: list[int] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.setdefault(self.current_epoch, []).append(x)
        return F.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.validated.append(len(batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def inputs(self, epoch: int) -> torch.Tensor:
        return torch.cat(self.seen[epoch])


def fit(epochs: int, resume=None, callbacks=(), **options):
    """Lightning fits 40 toy samples in batches of 8 (5 per epoch) and validates on 10 in
    batches of 4 after each epoch."""
    data = ToyDataModule(dim=8, n_train=40, n_val=10, n_test=10, batch_size=8, eval_batch_size=4)
    module = RecordBatches()
    trainer = cpu_trainer(
        max_epochs=epochs,
        num_sanity_val_steps=0,
        enable_checkpointing=bool(callbacks),
        callbacks=list(callbacks),
        **options,
    )
    trainer.fit(module, datamodule=LightningData(data), ckpt_path=resume)
    return data, module, trainer


def epoch_inputs(data: ToyDataModule, epoch: int) -> torch.Tensor:
    """The inputs of a training epoch in the loader's order."""
    return data.splits["train"].inputs[data.train_dataloader().epoch_rows(epoch)[:, 0]]


def test_lightning_trains_each_epoch_on_its_rows():
    data, module, trainer = fit(3)
    assert trainer.num_training_batches == len(data.train_dataloader()) == 5
    for epoch in range(3):
        assert torch.equal(module.inputs(epoch), epoch_inputs(data, epoch))
    assert not torch.equal(epoch_inputs(data, 0), epoch_inputs(data, 1))
    assert module.validated == [4, 4, 2] * 3  # every example once


def test_lightning_limits_batches_and_validates_within_epochs():
    data, module, trainer = fit(2, limit_train_batches=2)
    assert trainer.num_training_batches == 2
    for epoch in range(2):
        assert torch.equal(module.inputs(epoch), epoch_inputs(data, epoch)[:16])
    _, module, _ = fit(1, val_check_interval=2)
    assert len(module.seen[0]) == 5 and module.validated == [4, 4, 2] * 2  # after batches 2, 4


def test_a_resumed_run_trains_on_the_same_epochs(tmp_path):
    """From an epoch's end (as ``last.ckpt``) and from the middle of an epoch (step 7, after
    epoch 1's second batch). Lightning starts the interrupted epoch's iterator again, so its
    remaining steps take that epoch's first batches: of the same epoch's rows all the same."""
    steps = ModelCheckpoint(tmp_path / "steps", "{step}", every_n_train_steps=1, save_top_k=-1)
    ends = ModelCheckpoint(tmp_path / "ends", "{epoch}", save_top_k=-1)
    data, straight, _ = fit(3, callbacks=[steps, ends])
    _, resumed, _ = fit(3, resume=tmp_path / "ends" / "epoch=0.ckpt")
    assert sorted(resumed.seen) == [1, 2]
    for epoch in (1, 2):
        assert torch.equal(resumed.inputs(epoch), straight.inputs(epoch))
    _, resumed, _ = fit(3, resume=tmp_path / "steps" / "step=7.ckpt")
    assert torch.equal(resumed.inputs(1), epoch_inputs(data, 1)[:24])  # 3 batches of 8
    assert torch.equal(resumed.inputs(2), straight.inputs(2))
