"""Shared fixtures: the real Hydra config, shrunk to run in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sdexp.synthetic import write_synthetic_cifar

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"  # the Hydra configs (the package sdexp.conf once installed)

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

# A toy run that takes a few seconds (conf/scale/tiny.yaml: the smoke sweep's runs too).
FAST_TOY = ["+scale=tiny"]


@contextmanager
def hydra_configs() -> Iterator[None]:
    """The project's configs, loaded as Hydra loads them for ``train.py`` and the theory."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def compose_config(
    overrides: list[str], config_name: str = "train", hydra: bool = False
) -> DictConfig:
    """The composed config (with Hydra's own node when ``hydra``), as a job gets it."""
    with hydra_configs():
        return compose(config_name, overrides, return_hydra_config=hydra)


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


def table_rows(markdown: str) -> list[list[str]]:
    """The rows of every pipe table in ``markdown`` (``DataFrame.to_markdown`` pads its cells),
    each as its stripped cells; header rows in, rule rows out."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(c and set(c) <= set(":-") for c in cells):
                rows.append(cells)
    return rows


def table_row(markdown: str, *first: str) -> list[str]:
    """The first row of a table in ``markdown`` whose cells begin with ``first``."""
    return next(row for row in table_rows(markdown) if row[: len(first)] == list(first))


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


def run_table(*args: str) -> subprocess.CompletedProcess:
    """``sdexp-table ARGS`` as a user runs it (``python -m sdexp.table``: this checkout's code)."""
    return subprocess.run(
        [sys.executable, "-m", "sdexp.table", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=user_env(),
    )
