"""Data: CIFAR-10/100 through torchvision's loader, and the paper's toy regression (Sec. 6).

Every split is held as one tensor (CIFAR as uint8 images), on the training device when that is
an accelerator (``on_device``), and batched by ``EpochLoader``, a sized iterable over those
tensors modelled on airbench's ``CifarLoader`` (https://github.com/KellerJordan/cifar10-airbench):
no Dataset, sampler or collate function, and no loop over images in Python. Each epoch draws one
tensor of rows (index, crop offsets, flip flag), a batch is a slice of it, and the images of a
batch are one gather. Random crop (zero padding), horizontal flip and per-channel normalisation
then run on the whole batch on its device (``on_after_batch_transfer``). torchvision's
transforms draw one crop per call, i.e. per image, hence the hand-written batched crop below.

The rows of an epoch come from a generator seeded by (seed, epoch), the epoch being the trainer's
(restored from the checkpoint on resuming): an epoch is the same whether the run is fresh or
resumed, with no state to save. Under DDP every rank takes its own share of the same rows
(``num_replicas``, ``rank``), like ``DistributedSampler``.
"""

from __future__ import annotations

import functools
import itertools
import math
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sdexp.errors import ConfigError


class Batch(NamedTuple):
    inputs: Tensor
    targets: Tensor
    augment: Tensor | None  # (B, 3) int64: crop offset dy, dx and flip flag, or None


class TensorSplit:
    """A split held as two tensors: inputs and targets, one row per example."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device) -> TensorSplit:
        return TensorSplit(self.inputs.to(device), self.targets.to(device))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for one epoch, independent across (seed, epoch) pairs."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class EpochLoader:
    """The batches of a split, one epoch per iteration; ``len`` is the number of batches.

    Training (``train``): each epoch is a fresh order of the examples, drawn from
    ``epoch_generator(seed, epoch())``, each with a random crop offset in [0, 2 * padding]^2 and
    a flip flag when ``padding`` > 0. Evaluation: the examples in order, not augmented.

    Under DDP rank r of ``num_replicas`` R takes rows r, r + R, r + 2R, ... of the epoch, as
    ``DistributedSampler``. Training pads the epoch by wrapping around so that every rank takes
    the same number of steps; evaluation does not, so that every example counts exactly once in
    the metrics summed over the ranks. (Lightning puts a ``DistributedSampler`` into torch
    ``DataLoader``s only; other iterables reach the loops as they are.)

    ``epoch`` returns the epoch to draw. It is called at an epoch's first batch, not when the
    iterator is created: Lightning creates the first epoch's iterator in ``FitLoop.setup_data``,
    before the loop, and on resuming before the restored epoch is current (``on_run_start``).
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        train: bool = False,
        seed: int = 0,
        padding: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        pin_memory: bool = False,
    ) -> None:
        self.split, self.batch_size, self.train = split, batch_size, train
        self.seed, self.padding, self.epoch = seed, padding, epoch
        self.num_replicas, self.rank, self.pin_memory = num_replicas, rank, pin_memory

    @property
    def num_rows(self) -> int:
        """This rank's examples per epoch."""
        if self.train:
            return math.ceil(len(self.split) / self.num_replicas)
        return len(range(self.rank, len(self.split), self.num_replicas))

    def __len__(self) -> int:
        return math.ceil(self.num_rows / self.batch_size)

    def epoch_rows(self, epoch: int) -> Tensor:
        """This rank's rows of ``epoch``: (num_rows, 1) indices, or (num_rows, 4) indices, dy,
        dx, flip when training with padding; int64 on the CPU."""
        size = len(self.split)
        if not self.train:
            return torch.arange(self.rank, size, self.num_replicas)[:, None]
        g = epoch_generator(self.seed, epoch)
        rows = torch.randperm(size, generator=g)[:, None]
        if self.padding:
            offsets = torch.randint(0, 2 * self.padding + 1, (size, 2), generator=g)
            flips = torch.randint(0, 2, (size, 1), generator=g)
            rows = torch.cat([rows, offsets, flips], 1)
        if self.num_replicas > 1:  # wrap around so that every rank gets num_rows
            rows = rows[torch.arange(self.num_rows * self.num_replicas) % size]
        return rows[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[Batch]:
        # A generator: its body, which asks for the epoch and draws the rows, runs at the first
        # batch.
        yield from self.batches(self.epoch())

    def stream(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch``, then of the epochs after it, without end."""
        for later in itertools.count(epoch):
            yield from self.batches(later)

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch``."""
        rows = self.epoch_rows(epoch).to(self.split.inputs.device)
        for part in rows.split(self.batch_size):
            inputs, targets = self.split.inputs[part[:, 0]], self.split.targets[part[:, 0]]
            if self.pin_memory:  # held on the CPU, trained on an accelerator: faster copies
                inputs, targets = inputs.pin_memory(), targets.pin_memory()
            yield Batch(inputs, targets, part[:, 1:] if part.shape[1] > 1 else None)


def crop_and_flip(images: Tensor, augment: Tensor, padding: int) -> Tensor:
    """Per-image random crop of zero-padded images plus horizontal flip, as one gather.

    images: (B, C, H, W); augment: (B, 3) = (dy, dx, flip) with dy, dx in [0, 2 * padding].
    Equivalent to torchvision's RandomCrop(H, padding) followed by RandomHorizontalFlip().
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4).flatten(2)  # (B, C, (H + 2p) (W + 2p))
    augment = augment.to(device, non_blocking=True)
    dy, dx, flip = augment[:, 0:1], augment[:, 1:2], augment[:, 2:3].bool()
    rows = dy + torch.arange(h, device=device)  # (B, H)
    cols = torch.arange(w, device=device)
    cols = dx + torch.where(flip, w - 1 - cols, cols)  # (B, W)
    pixels = rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]  # (B, H, W) in the padded
    return padded.gather(2, pixels.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


class TensorDataModule:
    """Splits held as tensors, batched by ``EpochLoader``; subclasses fill ``self.splits``.

    ``on_device``: hold the splits on the training device ("auto": when it is not the CPU).

    It has a ``LightningDataModule``'s hooks (``prepare_data``, ``setup``, ``*_dataloader``,
    ``on_after_batch_transfer``) but not its base class, so that planning a sweep, which reads
    a dataset's name, shape and options, imports neither Lightning nor torchvision (seconds).
    ``sdexp.module.LightningData`` hands it to a Trainer; ``trainer`` is the Trainer it reads
    the device, the ranks and the epoch from (None: the CPU, one process, epoch 0).
    """

    name: str
    task: str  # "classification" or "regression"
    num_outputs: int
    input_shape: tuple[int, ...]

    val_size: int  # images or samples in the validation split (0: none)

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        padding: int = 0,
        on_device: bool | str = "auto",
    ) -> None:
        self.trainer = None
        if on_device not in (True, False, "auto"):
            raise ConfigError("dataset.on_device", f"true, false or auto, got {on_device!r}")
        for option, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"dataset.{option}", f"a positive integer, got {value}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.padding, self.on_device = seed, padding, on_device
        self.splits: dict[str, TensorSplit] = {}

    def prepare_data(self) -> None:
        """Fetch or check the data once per machine (CIFAR does); generated data needs nothing."""

    @property
    def has_validation(self) -> bool:
        return self.val_size > 0

    def _placement(self) -> tuple[torch.device, int, int]:
        """The device that holds the data, and this process's (num_replicas, rank)."""
        if self.trainer is None:
            return torch.device("cpu"), 1, 0
        device = self.trainer.strategy.root_device
        keep = self.on_device if self.on_device != "auto" else device.type != "cpu"
        return (
            (device if keep else torch.device("cpu")),
            self.trainer.world_size,
            self.trainer.global_rank,
        )

    def current_epoch(self) -> int:
        """The epoch being trained: the trainer's, restored from the checkpoint on resuming (0
        without a trainer).

        Lightning 2.x passes the epoch to ``set_epoch`` of the ``sampler`` (or
        ``batch_sampler.sampler``) of what ``train_dataloader`` returns, and to nothing else
        (``_set_sampler_epoch`` in ``lightning_fabric.utilities.data``). A plain iterable has
        no sampler, so the loader asks here, when it draws an epoch's rows.
        """
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, split: str, train: bool = False) -> EpochLoader:
        self.setup()
        device, num_replicas, rank = self._placement()
        data = self.splits[split] = self.splits[split].to(device)  # moved once, then kept there
        return EpochLoader(
            data,
            self.batch_size if train else self.eval_batch_size,
            train=train,
            seed=self.seed,
            padding=self.padding,
            num_replicas=num_replicas,
            rank=rank,
            epoch=self.current_epoch,
            pin_memory=device.type == "cpu" and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> EpochLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> EpochLoader:
        return self._loader("val")

    def test_dataloader(self) -> EpochLoader:
        return self._loader("test")

    def preprocess(self, inputs: Tensor, augment: Tensor | None) -> Tensor:
        return inputs

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        return self.preprocess(batch.inputs, batch.augment), batch.targets


# --- CIFAR ---------------------------------------------------------------------------------

CIFAR = ("cifar10", "cifar100")


def cifar_class(name: str, verify_md5: bool = True) -> type:
    """torchvision's CIFAR10 or CIFAR100, imported when the files are first read (a second)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from sdexp.synthetic import unverified

    cifar = CIFAR10 if name == "cifar10" else CIFAR100
    return cifar if verify_md5 else unverified(cifar)


def channel_statistics(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of uint8 images (B, C, H, W) scaled to [0, 1],
    exactly, from each channel's 256-bin histogram (no float copy of the pixels)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for channel in images.unbind(1):
        counts = torch.bincount(channel.flatten(), minlength=256).double()
        m = (counts * levels).sum() / counts.sum()
        var = (counts * (levels - m) ** 2).sum() / (counts.sum() - 1)  # unbiased, as Tensor.std
        mean.append(m)
        std.append(var.sqrt())
    return torch.stack(mean).float(), torch.stack(std).float()


class CIFARDataModule(TensorDataModule):
    """CIFAR-10/100: the last ``val_size`` training images held out for validation; training
    batches get a random crop (zero padding ``padding``) and a horizontal flip. Pixels are scaled
    to [0, 1] (torchvision's ``ToTensor``); ``normalize`` then standardises each channel with the
    training split's mean and standard deviation."""

    task = "classification"
    input_shape = (3, 32, 32)

    def __init__(
        self,
        name: str = "cifar10",
        data_dir: str = "data",
        download: bool = True,
        verify_md5: bool = True,
        val_size: int = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        padding: int = 4,
        normalize: bool = True,
        seed: int = 0,
        on_device: bool | str = "auto",
    ) -> None:
        if name not in CIFAR:
            raise ConfigError("dataset.name", f"one of {sorted(CIFAR)}, got {name!r}")
        super().__init__(batch_size, eval_batch_size, seed, padding, on_device)
        self.name, self.data_dir = name, Path(data_dir)
        self.download, self.val_size, self.normalize = download, val_size, normalize
        self.verify_md5 = verify_md5
        self.num_outputs = 100 if name == "cifar100" else 10
        if val_size < 0:
            raise ConfigError("dataset.val_size", f"a number of images >= 0, got {val_size}")

    @functools.cached_property
    def cifar(self) -> type:
        """torchvision's class, which checks every file against the official archive's md5 sums.
        verify_md5=false reads other copies (the synthetic ones of tests and benchmarks) through
        torchvision's loader all the same, by the md5-free subclass that lives with the code
        that writes them: no reader of our own, no reaching into torchvision's private checks."""
        return cifar_class(self.name, self.verify_md5)

    def _missing(self, reason: str) -> ConfigError:
        folder = self.data_dir.resolve() / self.cifar.base_folder
        return ConfigError(
            "dataset.data_dir",
            f"{self.name} is not in {folder} and could not be downloaded ({reason}). "
            f"Put the extracted folder {self.cifar.base_folder}/ (from {self.cifar.url}) in "
            f"{self.data_dir.resolve()}, or point dataset.data_dir at the directory that holds it",
        )

    def _unofficial(self) -> ConfigError:
        folder = self.data_dir.resolve() / self.cifar.base_folder
        return ConfigError(
            "dataset.verify_md5",
            f"the files in {folder} fail the md5 checksums of the official {self.name} archive "
            f"({self.cifar.url}): to read a copy of other or fewer images as it is, pass "
            "dataset.verify_md5=false (and a dataset.val_size below its number of training "
            "images); else put the official files there",
        )

    def prepare_data(self) -> None:
        """Check (or download) the data; raise a ConfigError naming the directory if missing,
        or naming ``dataset.verify_md5`` if the files are there but not the official ones
        (nothing is downloaded over them)."""
        if self._present():
            return
        if self.verify_md5 and self._present(verified=False):
            raise self._unofficial()
        if not self.download:
            raise self._missing("dataset.download=false")
        created = not self.data_dir.exists()
        try:
            self.cifar(str(self.data_dir), train=False, download=True)
        except Exception as error:  # no network, DNS failure, HTTP error, bad archive
            if created and self.data_dir.exists() and not any(self.data_dir.iterdir()):
                self.data_dir.rmdir()  # leave nothing behind
            raise self._missing(f"{type(error).__name__}: {error}") from error

    def _present(self, verified: bool = True) -> bool:
        """Whether torchvision's public constructor reads the data: it checks every file of
        both splits (with its md5 sum unless ``verify_md5`` or ``verified`` is false) and raises
        RuntimeError when one is missing or corrupt. The test split is the smaller one to read.
        """
        cifar = self.cifar if verified else cifar_class(self.name, verify_md5=False)
        unreadable = () if verified else (OSError, ValueError, pickle.UnpicklingError, EOFError)
        try:
            cifar(str(self.data_dir), train=False)
        except (RuntimeError, *unreadable):
            return False
        return True

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, test = (self.cifar(str(self.data_dir), train=t) for t in (True, False))
        images = torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(train.targets)
        if self.val_size >= len(labels):
            raise ConfigError(
                "dataset.val_size",
                f"fewer than the {len(labels)} training images, got {self.val_size}",
            )
        cut = len(labels) - self.val_size
        self.splits = {
            "train": TensorSplit(images[:cut], labels[:cut]),
            "val": TensorSplit(images[cut:], labels[cut:]),
            "test": TensorSplit(
                torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
                torch.tensor(test.targets),
            ),
        }
        self.mean, self.std = (
            channel_statistics(images[:cut]) if self.normalize else (torch.zeros(3), torch.ones(3))
        )
        # x = (pixel / 255 - mean) / std as one multiply-add per pixel: pixel * scale - shift.
        self.scale = (1.0 / (255.0 * self.std))[:, None, None]
        self.shift = (self.mean / self.std)[:, None, None]

    def preprocess(self, inputs: Tensor, augment: Tensor | None) -> Tensor:
        if augment is not None:
            inputs = crop_and_flip(inputs, augment, self.padding)
        if self.scale.device != inputs.device:
            self.scale, self.shift = self.scale.to(inputs.device), self.shift.to(inputs.device)
        return torch.addcmul(-self.shift, inputs.float(), self.scale)


# --- The toy regression of Sec. 6 ----------------------------------------------------------


class ToyDataModule(TensorDataModule):
    """x ~ N(0, I_d), target sin(beta^T x) with beta ~ N(0, beta_scale^2 I_d) (Sec. 6, d = 256).

    All of it comes from ``data_seed`` (the same data for every run seed) and is generated in
    memory. The regression loss is the mean squared error.
    """

    name = "toy"
    task = "regression"
    num_outputs = 1

    def __init__(
        self,
        dim: int = 256,
        n_train: int = 4096,
        n_val: int = 512,
        n_test: int = 1024,
        beta_scale: float = 1.0,
        data_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        seed: int = 0,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, on_device=on_device)
        for option, value in (("dim", dim), ("n_train", n_train), ("n_test", n_test)):
            if value < 1:
                raise ConfigError(f"dataset.{option}", f"a positive integer, got {value}")
        if n_val < 0:
            raise ConfigError("dataset.n_val", f"a number of samples >= 0, got {n_val}")
        self.dim, self.sizes = dim, {"train": n_train, "val": n_val, "test": n_test}
        self.val_size = n_val
        self.beta_scale, self.data_seed = beta_scale, data_seed
        self.input_shape = (dim,)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        g = torch.Generator().manual_seed(self.data_seed)
        self.beta = torch.randn(self.dim, generator=g) * self.beta_scale
        for split, n in self.sizes.items():
            x = torch.randn(n, self.dim, generator=g)
            self.splits[split] = TensorSplit(x, torch.sin(x @ self.beta)[:, None])

    @property
    def baseline(self) -> str:
        """What a test MSE is to be read against: predicting the mean has the targets' variance."""
        self.setup()
        return f"the test targets' variance is {self.splits['test'].targets.var().item():.3g}"


# --- scikit-learn's handwritten digits (a CPU-sized image task) ---------------------------------


class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled handwritten digits (UCI optdigits test set): 1,797 grey 8x8 images
    of 10 classes, pixel values 0..16, read from the package's own copy (no download).

    The images are split once, by a permutation drawn from ``data_seed`` (the same split for
    every run seed), into ``n_test`` test and ``n_val`` validation images, and ``n_train``
    training images from the rest (null: all of the rest). Pixels are scaled to [0, 1];
    ``normalize`` then standardises them with the training split's mean and standard deviation.
    No augmentation: a flip changes a digit, and without augmentation stochastic depth (with
    weight decay) is the run's only regulariser.
    """

    name = "digits"
    task = "classification"
    num_outputs = 10
    input_shape = (1, 8, 8)
    size = 1797  # images in sklearn.datasets.load_digits

    def __init__(
        self,
        n_train: int | None = None,
        n_val: int = 300,
        n_test: int = 500,
        data_seed: int = 0,
        normalize: bool = True,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        seed: int = 0,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, on_device=on_device)
        if n_test < 1 or n_val < 0:
            raise ConfigError(
                "dataset", f"n_test >= 1 and n_val >= 0 images, got n_test={n_test}, n_val={n_val}"
            )
        rest = self.size - n_test - n_val
        n_train = rest if n_train is None else n_train
        if not 1 <= n_train <= rest:
            raise ConfigError(
                "dataset.n_train",
                f"between 1 and the {rest} images left by n_val={n_val} and n_test={n_test} "
                f"(of {self.size}), or null for all of them, got {n_train}",
            )
        self.sizes = {"test": n_test, "val": n_val, "train": n_train}
        self.val_size, self.data_seed, self.normalize = n_val, data_seed, normalize

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits  # here: only this task needs scikit-learn

        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div_(16.0)[:, None]  # (N, 1, 8, 8)
        labels = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.data_seed))
        test, val, train = order[: sum(self.sizes.values())].split(list(self.sizes.values()))
        mean, std = (images[train].mean(), images[train].std()) if self.normalize else (0.0, 1.0)
        for split, index in (("train", train), ("val", val), ("test", test)):
            self.splits[split] = TensorSplit((images[index] - mean) / std, labels[index])
