"""The datasets: CIFAR-10/100 through torchvision's loader, the paper's toy regression (Sec. 6),
and scikit-learn's handwritten digits (a CPU-sized image task), each a ``TensorDataModule``
(``sdexp.loader``). Building one reads no data (``setup`` does), so that a config check can
build the dataset a run then uses.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import torch
from torch import Tensor

from sdexp.errors import ConfigError
from sdexp.loader import TensorDataModule, TensorSplit, crop_and_flip

CIFAR = ("cifar10", "cifar100")


def cifar_class(name: str, verify_md5: bool = True) -> type:
    """torchvision's CIFAR10 or CIFAR100, imported when the files are first read (a second)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from sdexp.synthetic import unverified

    cifar = CIFAR10 if name == "cifar10" else CIFAR100
    return cifar if verify_md5 else unverified(cifar)


def cifar_tensors(split) -> tuple[Tensor, Tensor]:
    """A torchvision CIFAR split as uint8 images (N, 3, 32, 32) and labels."""
    images = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(split.targets)


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
    """CIFAR-10/100: the last ``val_size`` training images held out for validation, training
    batches randomly cropped (zero padding ``padding``) and flipped, pixels scaled to [0, 1] and
    (``normalize``) standardised per channel by the training split's statistics."""

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
        self.verify_md5, self.num_outputs = verify_md5, 100 if name == "cifar100" else 10
        if val_size < 0:
            raise ConfigError("dataset.val_size", f"a number of images >= 0, got {val_size}")

    @functools.cached_property
    def cifar(self) -> type:
        """torchvision's class, which checks every file's md5 sum; verify_md5=false reads other
        copies (the synthetic ones) through its md5-free subclass (``sdexp.synthetic``)."""
        return cifar_class(self.name, self.verify_md5)

    def _missing(self, reason: str) -> ConfigError:
        folder = self.data_dir.resolve() / self.cifar.base_folder
        return ConfigError(
            "dataset.data_dir",
            f"{self.name} is not in {folder} and could not be downloaded ({reason}). "
            f"Put the extracted folder {self.cifar.base_folder}/ (from {self.cifar.url}) in "
            f"{self.data_dir.resolve()}, or point dataset.data_dir at the directory that holds it",
        )

    def prepare_data(self) -> None:
        """Check (or download) the data; a ConfigError naming the directory if it is missing, or
        ``dataset.verify_md5`` if the files there are not the official ones (kept as they are)."""
        if self._present():
            return
        if self.verify_md5 and self._present(verified=False):
            raise ConfigError(
                "dataset.verify_md5",
                f"the files in {self.data_dir.resolve() / self.cifar.base_folder} fail the md5 "
                f"checksums of the official {self.name} archive ({self.cifar.url}): to read a "
                "copy of other or fewer images as it is, pass dataset.verify_md5=false (and a "
                "dataset.val_size below its number of training images); else put the official "
                "files there",
            )
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
        """Whether torchvision's constructor reads the (test split's) data: it checks every file,
        by md5 sum unless ``verify_md5`` or ``verified`` is false."""
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
        (images, labels), test = (
            cifar_tensors(self.cifar(str(self.data_dir), train=t)) for t in (True, False)
        )
        if self.val_size >= len(labels):
            raise ConfigError(
                "dataset.val_size",
                f"fewer than the {len(labels)} training images, got {self.val_size}",
            )
        cut = len(labels) - self.val_size
        self.splits = {
            "train": TensorSplit(images[:cut], labels[:cut]),
            "val": TensorSplit(images[cut:], labels[cut:]),
            "test": TensorSplit(*test),
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


class ToyDataModule(TensorDataModule):
    """x ~ N(0, I_d), target sin(beta^T x) with beta ~ N(0, beta_scale^2 I_d) (Sec. 6, d = 256),
    all drawn from ``data_seed`` (the same data for every run seed); the loss is the MSE."""

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
        self.val_size, self.beta_scale, self.data_seed = n_val, beta_scale, data_seed
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


class DigitsDataModule(TensorDataModule):
    """scikit-learn's 1,797 grey 8x8 handwritten digits, pixels 0..16 scaled to [0, 1] (and
    ``normalize``d), split by a permutation from ``data_seed`` (n_train null: all the rest). No
    augmentation: a flip changes a digit; stochastic depth is the only regulariser."""

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
