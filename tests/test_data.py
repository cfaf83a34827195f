"""CIFAR through torchvision's real loader, the epoch loader and the batched augmentation (alone
and under Lightning's loops), the toy task."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torchvision.datasets import CIFAR10

from sdexp.data import (
    CIFARDataModule,
    DigitsDataModule,
    ToyDataModule,
)
from sdexp.errors import ConfigError
from sdexp.loader import EpochLoader, TensorSplit, crop_and_flip
from sdexp.module import LightningData
from tests.conftest import run_train


def loader(size: int, batch_size: int = 16, **options) -> EpochLoader:
    """An epoch loader over ``size`` examples whose inputs are their indices."""
    return EpochLoader(TensorSplit(torch.arange(size), torch.arange(size)), batch_size, **options)


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_the_real_format(cifar_root, name, classes):
    dm = CIFARDataModule(name, str(cifar_root), download=False, verify_md5=False, val_size=20)
    dm.prepare_data()
    dm.setup()
    sizes = {split: len(data) for split, data in dm.splits.items()}
    assert sizes == {"train": 100, "val": 20, "test": 40}
    assert dm.num_outputs == classes and dm.input_shape == (3, 32, 32)
    train = dm.splits["train"]
    assert train.inputs.dtype == torch.uint8 and train.inputs.shape[1:] == (3, 32, 32)
    # The held-out images are the last ones of the training set, as torchvision reads them.
    reference = dm.cifar(str(cifar_root), train=True)
    last = torch.from_numpy(reference.data[-1]).permute(2, 0, 1)
    assert torch.equal(dm.splits["val"].inputs[-1], last)
    assert dm.splits["val"].targets[-1].item() == reference.targets[-1]
    x, y = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert (y < classes).all()


def test_normalisation_uses_training_statistics(cifar_root):
    dm = CIFARDataModule("cifar10", str(cifar_root), download=False, verify_md5=False, val_size=0)
    dm.setup()
    x = dm.preprocess(dm.splits["train"].inputs, None)
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    assert not dm.has_validation


def test_crop_and_flip_matches_per_image_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    augment = torch.cat(
        [torch.randint(0, 9, (16, 2), generator=g), torch.randint(0, 2, (16, 1), generator=g)], 1
    )
    out = crop_and_flip(images, augment, padding=4)
    for image, (dy, dx, flip), result in zip(images, augment.tolist(), out, strict=True):
        expected = F.pad(image, (4, 4, 4, 4))[:, dy : dy + 32, dx : dx + 32]
        if flip:
            expected = expected.flip(-1)
        assert torch.equal(result, expected)


def test_augmentation_statistics():
    rows = loader(20_000, train=True, padding=4).epoch_rows(0)
    assert sorted(rows[:, 0].tolist()) == list(range(20_000))  # a permutation
    assert set(rows[:, 1].tolist()) == set(range(9)) == set(rows[:, 2].tolist())
    assert abs(rows[:, 3].float().mean().item() - 0.5) < 0.02


def test_epochs_are_reproducible_and_differ():
    train = loader(100, seed=3, train=True, padding=4)
    first = train.epoch_rows(0)
    assert torch.equal(train.epoch_rows(0), first)
    assert not torch.equal(train.epoch_rows(1), first)
    assert not torch.equal(loader(100, seed=4, train=True, padding=4).epoch_rows(0), first)
    assert torch.equal(loader(100, seed=3).epoch_rows(5)[:, 0], torch.arange(100))  # evaluation


def test_the_epoch_is_read_at_the_first_batch():
    """As on resuming: the iterator exists before the trainer's epoch is restored."""
    epoch = [0]
    train = loader(50, train=True, padding=4, epoch=lambda: epoch[0])
    batches = iter(train)
    epoch[0] = 2
    assert torch.equal(next(batches).augment, train.epoch_rows(2)[:16, 1:])


def test_ranks_share_an_epoch():
    """Like DistributedSampler: equal shares, together every index, from the same order."""
    whole = loader(103, seed=5, train=True, padding=4).epoch_rows(0)
    shares = [loader(103, seed=5, train=True, padding=4, num_replicas=4, rank=r) for r in range(4)]
    rows = [s.epoch_rows(0) for s in shares]
    assert {len(r) for r in rows} == {26} == {s.num_rows for s in shares}
    assert {len(s) for s in shares} == {2}  # batches: every rank takes the same steps
    assert set(torch.cat(rows)[:, 0].tolist()) == set(range(103))
    assert torch.equal(rows[1][0], whole[1])  # rank r takes rows r, r + R, r + 2R, ...


def test_evaluation_counts_every_example_once_over_the_ranks():
    shares = [loader(103, num_replicas=4, rank=r) for r in range(4)]
    seen = [batch.inputs for share in shares for batch in share]
    assert sorted(torch.cat(seen).tolist()) == list(range(103))  # no wrap-around
    assert [s.num_rows for s in shares] == [26, 26, 26, 25]
    assert all(batch.augment is None for share in shares for batch in share)


def test_a_stream_runs_on_into_the_next_epochs():
    """SenseMode's ``mode.batches`` may exceed an epoch: the batches go on epoch after epoch,
    each epoch in its own order, the first being the epoch the stream starts at."""
    train = loader(50, seed=2, train=True, padding=4)
    stream = train.stream(3)
    taken = [next(stream) for _ in range(3 * len(train))]
    for k, epoch in enumerate((3, 4, 5)):
        expected = list(train.batches(epoch))
        for got, want in zip(taken[k * len(train) : (k + 1) * len(train)], expected, strict=True):
            assert torch.equal(got.inputs, want.inputs) and torch.equal(got.augment, want.augment)
    assert torch.equal(torch.cat([b.inputs for b in train.batches(3)]), train.epoch_rows(3)[:, 0])


def test_digits_without_validation_train_on_the_same_images():
    """+sweep=hypothesis_cpu moves the 300 validation images into the test set (n_val=0,
    n_test=1297): the 500 training images, and so their standardisation, stay the same."""
    default = DigitsDataModule(n_train=500, n_val=300, n_test=997)
    merged = DigitsDataModule(n_train=500, n_val=0, n_test=1297)
    for dm in (default, merged):
        dm.setup()
    assert torch.equal(default.splits["train"].inputs, merged.splits["train"].inputs)
    assert torch.equal(default.splits["train"].targets, merged.splits["train"].targets)
    together = torch.cat([default.splits["test"].inputs, default.splits["val"].inputs])
    assert torch.equal(merged.splits["test"].inputs, together) and not merged.has_validation


def test_batches_are_slices_of_the_epoch():
    train = loader(50, train=True, padding=4)
    batches = list(train)
    assert [len(b.targets) for b in batches] == [16, 16, 16, 2] and len(train) == 4
    rows = train.epoch_rows(0)
    assert torch.equal(torch.cat([b.inputs for b in batches]), rows[:, 0])  # inputs: indices
    assert torch.equal(torch.cat([b.augment for b in batches]), rows[:, 1:])


def test_loader_batches_match_the_rows(cifar_root):
    dm = CIFARDataModule(
        "cifar10", str(cifar_root), download=False, verify_md5=False, val_size=20, batch_size=32
    )
    train = dm.train_dataloader()
    batch = next(iter(train))
    rows = train.epoch_rows(0)[:32]
    assert torch.equal(batch.inputs, dm.splits["train"].inputs[rows[:, 0]])
    assert torch.equal(batch.augment, rows[:, 1:])
    x, y = dm.on_after_batch_transfer(batch, 0)
    expected = dm.preprocess(crop_and_flip(batch.inputs, batch.augment, 4), None)
    torch.testing.assert_close(x, expected)
    assert len(train) == 4  # ceil(100 / 32)


# --- under Lightning's loops ---------------------------------------------------------------


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
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
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


def test_missing_data_names_the_directory(tmp_path):
    dm = CIFARDataModule("cifar10", str(tmp_path / "nowhere"), download=False)
    with pytest.raises(ConfigError, match="cifar-10-batches-py") as error:
        dm.prepare_data()
    assert error.value.option == "dataset.data_dir"
    assert str(tmp_path / "nowhere") in str(error.value)


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(CIFAR10, "download", offline)
    dm = CIFARDataModule("cifar10", str(tmp_path / "data"), download=True)
    with pytest.raises(ConfigError, match="could not be downloaded.*Name or service not known"):
        dm.prepare_data()
    assert not (tmp_path / "data").exists()


def test_official_checksums_reject_other_files(cifar_root):
    """A copy in the real format with other images: the error names the checksums and the
    switch, and nothing is downloaded over the copy (download stays true)."""
    before = {p: p.read_bytes() for p in (cifar_root / "cifar-10-batches-py").iterdir()}
    dm = CIFARDataModule("cifar10", str(cifar_root), download=True, verify_md5=True)
    with pytest.raises(ConfigError, match="fail the md5 checksums") as error:
        dm.prepare_data()
    assert error.value.option == "dataset.verify_md5"
    assert "dataset.verify_md5=false" in str(error.value)
    assert {p: p.read_bytes() for p in (cifar_root / "cifar-10-batches-py").iterdir()} == before
    CIFARDataModule("cifar10", str(cifar_root), download=False, verify_md5=False).prepare_data()


@pytest.mark.slow
def test_a_small_copy_says_which_switches_it_needs(cifar_root, tmp_path):
    """Through the CLI, as a user with a copy of CIFAR-10 that is not the official archive
    (120 training images): one line naming dataset.verify_md5, then, with it off, one line
    naming dataset.val_size (5000 by default); exit status 2 and no traceback either time."""
    where = [f"dataset.data_dir={cifar_root}", "trainer=cpu", "logger=none"]
    done = run_train(*where, f"hydra.run.dir={tmp_path / 'a'}")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: dataset.verify_md5: the files in ")
    assert "fail the md5 checksums of the official cifar10 archive" in line
    done = run_train(*where, "dataset.verify_md5=false", f"hydra.run.dir={tmp_path / 'b'}")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: dataset.val_size: fewer than the 120 training images, got 5000"
    ]


def test_toy_task():
    dm = ToyDataModule(dim=8, n_train=50, n_val=10, n_test=20, data_seed=1)
    dm.setup()
    x, y = dm.splits["train"].inputs, dm.splits["train"].targets
    assert x.shape == (50, 8) and y.shape == (50, 1)
    torch.testing.assert_close(y, torch.sin(x @ dm.beta)[:, None])
    again = ToyDataModule(dim=8, n_train=50, n_val=10, n_test=20, data_seed=1, seed=5)
    again.setup()
    assert torch.equal(again.splits["test"].inputs, dm.splits["test"].inputs)  # data_seed only
    with pytest.raises(ConfigError, match="dataset.n_train"):
        ToyDataModule(n_train=0)
