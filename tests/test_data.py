"""CIFAR through torchvision's real loader, the batched augmentation, the toy task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.datasets import CIFAR10

from sdexp.data import CIFARDataModule, EpochBatches, EpochSampler, ToyDataModule, crop_and_flip
from sdexp.errors import ConfigError


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
    rows = EpochSampler(20_000, seed=0, padding=4).epoch_rows()
    assert sorted(rows[:, 0].tolist()) == list(range(20_000))  # a permutation
    assert set(rows[:, 1].tolist()) == set(range(9)) == set(rows[:, 2].tolist())
    assert abs(rows[:, 3].float().mean().item() - 0.5) < 0.02


def test_epochs_are_reproducible_and_differ():
    sampler = EpochSampler(100, seed=3, padding=4)
    first = sampler.epoch_rows()
    assert torch.equal(sampler.epoch_rows(), first)
    sampler.set_epoch(1)
    assert not torch.equal(sampler.epoch_rows(), first)
    sampler.set_epoch(0)
    assert torch.equal(sampler.epoch_rows(), first)
    assert not torch.equal(EpochSampler(100, seed=4, padding=4).epoch_rows(), first)


def test_ranks_share_an_epoch():
    """Like DistributedSampler: equal shares, together every index, from the same order."""
    whole = EpochSampler(103, seed=5, padding=4).epoch_rows()
    shares = [EpochSampler(103, seed=5, padding=4, num_replicas=4, rank=r) for r in range(4)]
    rows = [s.epoch_rows() for s in shares]
    assert {len(r) for r in rows} == {26} == {len(s) for s in shares}
    assert set(torch.cat(rows)[:, 0].tolist()) == set(range(103))
    assert torch.equal(rows[1][0], whole[1])  # rank r takes rows r, r + R, r + 2R, ...


def test_batches_are_slices_of_the_epoch():
    sampler = EpochSampler(50, seed=0, padding=4)
    batches = list(EpochBatches(sampler, 16))
    assert [len(b) for b in batches] == [16, 16, 16, 2] and len(EpochBatches(sampler, 16)) == 4
    assert torch.equal(torch.cat(batches), sampler.epoch_rows())


def test_loader_batches_match_the_rows(cifar_root):
    dm = CIFARDataModule(
        "cifar10", str(cifar_root), download=False, verify_md5=False, val_size=20, batch_size=32
    )
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    rows = loader.batch_sampler.sampler.epoch_rows()[:32]
    assert torch.equal(batch.inputs, dm.splits["train"].inputs[rows[:, 0]])
    assert torch.equal(batch.augment, rows[:, 1:])
    x, y = dm.on_after_batch_transfer(batch, 0)
    expected = dm.preprocess(crop_and_flip(batch.inputs, batch.augment, 4), None)
    torch.testing.assert_close(x, expected)
    assert len(loader) == 4  # ceil(100 / 32)


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
    dm = CIFARDataModule("cifar10", str(cifar_root), download=False, verify_md5=True)
    with pytest.raises(ConfigError):
        dm.prepare_data()


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
