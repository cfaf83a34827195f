"""CIFAR through torchvision's real loader, the epoch loader and the batched augmentation (under
Lightning's loops: tests/integration/test_data.py), the toy task, scikit-learn's digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchvision.datasets import CIFAR10

from sdexp.data import (
    CIFARDataModule,
    DigitsDataModule,
    ToyDataModule,
)
from sdexp.errors import ConfigError
from sdexp.loader import EpochLoader, TensorSplit, crop_and_flip


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


# --- the digits (issue 13: the CPU-sized Budget Hypothesis) ------------------------------------


def digits(**options) -> DigitsDataModule:
    dm = DigitsDataModule(**options)
    dm.setup()
    return dm


def as_rows(dm: DigitsDataModule, splits=("train", "val", "test")) -> list[tuple]:
    """Each image of ``splits`` as (label, its 64 pixel values 0..16), sorted."""
    rows = []
    for split in splits:
        data = dm.splits[split]
        pixels = (data.inputs.flatten(1) * 16).round().long()
        rows += [(y, *x) for y, x in zip(data.targets.tolist(), pixels.tolist(), strict=True)]
    return sorted(rows)


def test_digits_are_sklearns_images_split_once():
    dm = digits(n_train=None, normalize=False)
    sizes = {split: len(data) for split, data in dm.splits.items()}
    assert sizes == {"train": 997, "val": 300, "test": 500}
    assert dm.num_outputs == 10 and dm.input_shape == (1, 8, 8) and dm.has_validation
    for data in dm.splits.values():
        assert data.inputs.shape[1:] == (1, 8, 8) and data.inputs.dtype == torch.float32
        assert data.targets.dtype == torch.int64 and set(data.targets.tolist()) == set(range(10))
    # Every image of the set exactly once over the splits, pixels scaled by 1/16.
    sk = load_digits()
    reference = sorted(
        (int(y), *x) for y, x in zip(sk.target, sk.data.astype(int).tolist(), strict=True)
    )
    assert as_rows(dm) == reference


def test_digits_split_comes_from_data_seed_only():
    dm = digits(n_train=None, normalize=False)
    other_run = digits(n_train=None, normalize=False, seed=7)
    for split in ("train", "val", "test"):
        assert torch.equal(other_run.splits[split].inputs, dm.splits[split].inputs)
    other_data = digits(n_train=None, normalize=False, data_seed=1)
    assert as_rows(other_data, ["test"]) != as_rows(dm, ["test"])
    # A smaller training split: the first n_train of the same training images; the same
    # validation and test images.
    small = digits(n_train=100, normalize=False)
    assert len(small.splits["train"]) == 100
    assert torch.equal(small.splits["train"].inputs, dm.splits["train"].inputs[:100])
    assert as_rows(small, ["val", "test"]) == as_rows(dm, ["val", "test"])


def test_digits_standardised_with_training_statistics():
    raw, dm = digits(n_train=500, normalize=False), digits(n_train=500)
    train = raw.splits["train"].inputs
    mean, std = train.mean(), train.std()
    torch.testing.assert_close(dm.splits["train"].inputs.mean(), torch.tensor(0.0))
    torch.testing.assert_close(dm.splits["train"].inputs.std(), torch.tensor(1.0))
    for split in ("val", "test"):  # the training split's statistics, not their own
        torch.testing.assert_close(dm.splits[split].inputs, (raw.splits[split].inputs - mean) / std)
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,)  # batch 64, no augmentation


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_train": 0}, "dataset.n_train"),
        ({"n_train": 998}, "dataset.n_train: between 1 and the 997 images"),
        ({"n_val": 1000, "n_test": 797}, "dataset.n_train: between 1 and the 0 images"),
        ({"n_test": 0}, "dataset: n_test >= 1"),
        ({"n_val": -1}, "dataset: n_test >= 1 and n_val >= 0"),
    ],
)
def test_digits_bad_sizes(options, message):
    with pytest.raises(ConfigError, match=message):
        DigitsDataModule(**options)
