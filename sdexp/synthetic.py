"""Synthetic CIFAR: small look-alikes in the real on-disk format, for tests, smoke runs and the
benchmark (``scripts/bench.py``), read through ``unverified``: torchvision's class without the
md5 checks of the official archive (``dataset.verify_md5=false``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100


def unverified(cifar: type[CIFAR10]) -> type[CIFAR10]:
    """torchvision's CIFAR class with its md5 checks turned off (it skips a file whose md5 is
    None; the files must still exist)."""
    return type(
        f"Unverified{cifar.__name__}",
        (cifar,),
        {
            "train_list": [[name, None] for name, _ in cifar.train_list],
            "test_list": [[name, None] for name, _ in cifar.test_list],
            "meta": {**cifar.meta, "md5": None},
        },
    )


def write_synthetic_cifar(
    root: str | Path,
    name: str = "cifar10",
    train_size: int = 500,
    test_size: int = 100,
    seed: int = 0,
) -> Path:
    """Write a small CIFAR-10/100 look-alike (torchvision's python pickles) under ``root``: noise
    around a per-class colour, so that a network can learn it."""
    cifar, num_classes = (CIFAR100, 100) if name == "cifar100" else (CIFAR10, 10)
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(num_classes, 3, 1))

    def batch(n: int) -> dict:
        labels = rng.integers(0, num_classes, size=n)
        noise = rng.integers(-40, 41, size=(n, 3, 1024))
        data = np.clip(colours[labels] + noise, 0, 255).astype(np.uint8).reshape(n, 3072)
        entry = {"data": data, "filenames": [f"synthetic_{i}.png" for i in range(n)]}
        if name == "cifar100":
            return entry | {"fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}
        return entry | {"labels": labels.tolist(), "batch_label": "synthetic"}

    folder = Path(root) / cifar.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-train_size // len(cifar.train_list))
    sizes = [min(per_file, train_size - i * per_file) for i in range(len(cifar.train_list))]
    files = [(n, batch(k)) for (n, _), k in zip(cifar.train_list, sizes, strict=True)]
    files += [(cifar.test_list[0][0], batch(test_size))]
    names = [f"class_{i}" for i in range(num_classes)]
    meta = {cifar.meta["key"]: names}
    if name == "cifar100":
        meta["coarse_label_names"] = [f"superclass_{i}" for i in range(20)]
    files.append((cifar.meta["filename"], meta))
    for filename, content in files:
        with open(folder / filename, "wb") as f:
            pickle.dump(content, f)
    return Path(root)
