"""Shared fixtures: the real Hydra config, shrunk to run in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sdexp.data import write_synthetic_cifar

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

# A toy run that takes a few seconds: small data, small network, two epochs.
FAST_TOY = [
    "dataset=toy",
    "model=vanilla",
    "model.depth=8",
    "model.width=32",
    "dataset.n_train=256",
    "dataset.n_val=64",
    "dataset.n_test=64",
    "dataset.batch_size=32",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=4",
    "trainer.enable_progress_bar=false",
]


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture
def make_config(tmp_path):
    """compose(overrides) with the output directory in tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([f"output_dir={tmp_path / 'run'}", *overrides])

    return make


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """Tiny CIFAR-10 and CIFAR-100 in the real on-disk format (read by torchvision's loader)."""
    root = tmp_path_factory.mktemp("cifar")
    write_synthetic_cifar(root, "cifar10", train_size=120, test_size=40, seed=1)
    write_synthetic_cifar(root, "cifar100", train_size=120, test_size=40, seed=2)
    return root


def local_cifar(root: Path) -> list[str]:
    """Overrides that read the fixture's CIFAR copy: no download, no official checksums."""
    return [f"dataset.data_dir={root}", "dataset.download=false", "dataset.verify_md5=false"]


def user_env(**changes: str) -> dict[str, str]:
    """The environment of a user's shell: this one, with W&B offline and without the wandb-core
    service this test process may have started (a child would share it)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return env | {"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"} | changes


def run_train(*overrides: str, cwd: Path = ROOT, timeout: float = 600):
    """``python train.py OVERRIDES`` as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_env(),
    )
