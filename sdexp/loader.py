"""How a dataset's splits reach training: each split held as one tensor, batched per epoch.

Every split is one tensor (CIFAR as uint8 images), on the training device when that is an
accelerator, batched by ``EpochLoader`` after airbench's ``CifarLoader``
(https://github.com/KellerJordan/cifar10-airbench): no Dataset, sampler or collate function, no
loop over images in Python. Crop, flip and normalisation run per batch on its device
(torchvision's transforms crop one image per call). An epoch's rows are seeded by (seed, epoch):
a resumed epoch is a fresh one's, with no state to save.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
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


class EpochLoader:
    """The batches of a split, one epoch per iteration; ``len`` is the number of batches.

    Training: a fresh order each epoch, with a crop offset and a flip flag when ``padding`` > 0;
    evaluation: in order. Rank r of R takes rows r, r + R, ...; training wraps around so that
    every rank takes as many steps, evaluation does not, so that every example counts once.
    ``epoch()`` is called at an epoch's first batch: Lightning creates the first iterator before
    the loop, and on resuming before the restored epoch is current.
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
        # A CPU generator independent across (seed, epoch) pairs.
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0]
        g = torch.Generator().manual_seed(int(state))
        rows = torch.randperm(size, generator=g)[:, None]
        if self.padding:
            offsets = torch.randint(0, 2 * self.padding + 1, (size, 2), generator=g)
            flips = torch.randint(0, 2, (size, 1), generator=g)
            rows = torch.cat([rows, offsets, flips], 1)
        if self.num_replicas > 1:  # wrap around so that every rank gets num_rows
            rows = rows[torch.arange(self.num_rows * self.num_replicas) % size]
        return rows[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[Batch]:
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
    """torchvision's RandomCrop(H, padding) then RandomHorizontalFlip, per image, as one gather.

    images: (B, C, H, W); augment: (B, 3) = (dy, dx, flip) with dy, dx in [0, 2 * padding]."""
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

    A ``LightningDataModule``'s hooks without its base class, so that planning a sweep imports
    neither Lightning nor torchvision. ``on_device``: hold the splits on the training device.
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
        """Fetch or check the data once per machine (CIFAR does)."""

    @property
    def has_validation(self) -> bool:
        return self.val_size > 0

    def _placement(self) -> tuple[torch.device, int, int]:
        """The device that holds the data, and this process's (num_replicas, rank)."""
        if self.trainer is None:
            return torch.device("cpu"), 1, 0
        trainer = self.trainer
        device = trainer.strategy.root_device
        keep = self.on_device if self.on_device != "auto" else device.type != "cpu"
        return device if keep else torch.device("cpu"), trainer.world_size, trainer.global_rank

    def current_epoch(self) -> int:
        """The trainer's epoch (restored on resuming; 0 without one). Lightning passes the epoch
        only to a sampler's ``set_epoch``, and a plain iterable has none, so the loader asks."""
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
