"""Shared fixtures: the real Hydra config, shrunk to run in seconds on a CPU, and what several
tests read: one tiny run, one smoke sweep, a failed sweep, a crashed run's checkpoint,
fabricated Table 2 results.

The session fixtures that run the command line are built once per test session, also under
pytest-xdist: the first worker that asks builds them under a file lock in the session's shared
temporary directory, the others wait and read them (pytest-xdist's documented recipe). They are
read-only for the tests: a test that changes one works on a copy (``copy_of``)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sdexp.synthetic import write_synthetic_cifar
from tests.helpers import (
    CRASHING,
    FAILING,
    ROOT,
    SMOKE_COMMAND,
    TINY_RUN,
    SilentServer,
    compose_config,
    copy_of,
    fake_cost_sweep,
    fake_table2_sweep,
    keep_output,
    readme_env,
    run_train,
)

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
# One torch thread in the test processes, as a run of its own takes (threads=auto, README "CPU
# threads"): on a shared CPU, and with a pytest-xdist worker per core, a second intra-op thread
# made the in-process tests several times slower.
torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config) -> int | None:
    """``-n auto``: a worker per core, and one more where SLURM is installed: the cluster layer's
    worker mostly waits for the cluster (scheduling, grace times, requeues) while the others use
    the cores. PYTEST_XDIST_AUTO_NUM_WORKERS still decides where it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    cores = len(os.sched_getaffinity(0))
    return cores + 1 if shutil.which("sinfo") else cores


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.gpu``: a test that needs a CUDA GPU, skipped without one."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_config(tmp_path):
    """compose(overrides) with the output directory in tmp_path."""

    def make(*overrides: str):
        return compose_config([f"output_dir={tmp_path / 'run'}", *overrides])

    return make


@pytest.fixture
def silent_server():
    """A W&B server that accepts connections and never answers (``SilentServer``)."""
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """Tiny CIFAR-10 and CIFAR-100 in the real on-disk format (read by torchvision's loader)."""
    root = tmp_path_factory.mktemp("cifar")
    write_synthetic_cifar(root, "cifar10", train_size=120, test_size=40, seed=1)
    write_synthetic_cifar(root, "cifar100", train_size=120, test_size=40, seed=2)
    return root


# --- built once per session ---------------------------------------------------------------------


def built_once(factory, name: str, build: Callable[[Path], None]) -> Path:
    """``<session temp>/<name>``, made by ``build(folder)`` once per test session: pytest-xdist's
    workers share the session's temporary directory (the parent of their own), and the first
    to get the lock builds while the others wait. A build that fails marks nothing done."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.write_text("")
    return folder


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """``python train.py +scale=tiny mode=sensemode budget=0.3 logger=wandb`` finished in
    ``<folder>/run`` (its output in ``command_output(<folder>)``); tests that write beside it
    use folders of their own under ``<folder>``."""

    def build(folder: Path) -> None:
        done = run_train(*TINY_RUN, f"hydra.run.dir={folder / 'run'}")
        assert done.returncode == 0, done.stderr[-3000:]
        keep_output(folder, done)

    return built_once(tmp_path_factory, "finished_run", build) / "run"


@pytest.fixture(scope="session")
def crashed_run(tmp_path_factory) -> Path:
    """The directory of a tiny run (``CRASHING``) that crashed after epoch 0: its results.json
    says failed, checkpoints/last.ckpt holds epoch 0, the ``crashed`` marker says it crashed
    once (the same command goes on)."""

    def build(folder: Path) -> None:
        done = run_train(*CRASHING, f"hydra.run.dir={folder / 'run'}")
        assert done.returncode == 1, done.stderr[-3000:]
        assert (folder / "run" / "checkpoints" / "last.ckpt").exists()

    return built_once(tmp_path_factory, "crashed_run", build) / "run"


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> Path:
    """The manual's ``python train.py +sweep=smoke``, run by bash in a fresh directory that holds
    this checkout's ``train.py`` and ``scripts/`` (as the commands' walker runs them): 12 runs
    logged to W&B offline in ``<folder>/outputs/sweeps/smoke``; the command's output in
    ``command_output(<folder>)``. Returns ``<folder>``."""

    def build(folder: Path) -> None:
        for name in ("train.py", "scripts"):
            (folder / name).symlink_to(ROOT / name)
        done = subprocess.run(
            ["bash", "-c", SMOKE_COMMAND],
            cwd=folder,
            env=readme_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        keep_output(folder, done)

    return built_once(tmp_path_factory, "smoke_sweep", build)


@pytest.fixture(scope="session")
def failed_sweep(tmp_path_factory) -> Path:
    """``python train.py FAILING``: a sweep of two runs that both fail (NaN or inf loss), in
    ``<folder>/sweep``; the command's output in ``command_output(<folder>)``. Returns the
    sweep's directory."""

    def build(folder: Path) -> None:
        keep_output(folder, run_train(*FAILING, f"hydra.sweep.dir={folder / 'sweep'}"))

    return built_once(tmp_path_factory, "failed_sweep", build) / "sweep"


@pytest.fixture(scope="session")
def table2_results(tmp_path_factory) -> Path:
    """Fabricated: a finished Table 2 sweep whose means are the paper's (``fake_table2_sweep``).
    Read-only: ``sweep`` is a copy a test may write into."""
    root = tmp_path_factory.mktemp("table2") / "table2_cifar10"
    fake_table2_sweep(root)
    return root


@pytest.fixture
def sweep(table2_results, tmp_path) -> Path:
    """A copy of ``table2_results`` of this test's own."""
    return copy_of(table2_results, tmp_path / "table2_cifar10")


@pytest.fixture(scope="session")
def cost_results(tmp_path_factory) -> Path:
    """Fabricated: runs with the times, devices and shares a real run records
    (``fake_cost_sweep``). Read-only."""
    root = tmp_path_factory.mktemp("cost") / "sweep"
    fake_cost_sweep(root)
    return root
