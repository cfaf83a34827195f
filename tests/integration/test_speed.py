"""The fast paths under Lightning and torch.compile: training logs only on the steps Lightning
writes (no wait for the device at every step), compiled branches compute the plain ones, the
benchmark's quick variant runs (what they refuse, and the paths alone: tests/unit/test_speed.py)."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from scripts.bench import main
from sdexp.data import ToyDataModule
from sdexp.models import VanillaResNet, compile_branches
from sdexp.run.module import LightningData, StochasticDepthModule
from sdexp.survival import Uniform
from tests.helpers import cifar_resnet14, cpu_trainer


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
def test_compiled_branches_match():
    x = torch.randn(2, 3, 32, 32)
    plain = cifar_resnet14().eval()
    fast = compile_branches(cifar_resnet14()).eval()
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints stay compatible
    torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    fast.train()
    plain.train()
    torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    assert fast.gate.last_mask == plain.gate.last_mask and not all(fast.gate.last_mask)


@pytest.mark.slow
def test_bench_runs(tmp_path):
    results = main(["--quick", "--out", str(tmp_path), "--workers", "0", "--images", "256"])
    step = results["step"]
    for kind in ("sd", "row", "dropout"):
        for budget in step["budgets"]:
            cell = step[f"{kind}@{budget}"]
            assert cell["min"] <= cell["median"] <= cell["max"]
    assert results["pipeline"]["ours_images_per_s"] > 0
    assert 0 <= results["pipeline"]["ours_data_wait_share"] <= 1
    assert (tmp_path / "bench.json").exists() and (tmp_path / "step_time.png").exists()


class LoggedCalls(StochasticDepthModule):
    """Records every ``self.log`` of a training step (Lightning's API, not the code under test)."""

    def log(self, name, value, *args, **kwargs):
        if self.trainer.training and name.startswith("train/") and name != "train/epoch_time_s":
            self.calls.append((self.global_step, name, value))
        super().log(name, value, *args, **kwargs)


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


def test_training_logs_only_on_the_steps_lightning_writes(tmp_path):
    """train/loss reaches the logger at the steps it did when it was logged at every step, with
    that step's value; nothing is logged on the other steps; the values are CPU tensors."""
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=1, width=16, depth=4)
    module = LoggedCalls(model, Uniform(), 0.5, "regression", 1, optimizer=torch.optim.SGD)
    module.calls = []
    data = ToyDataModule(dim=16, n_train=200, n_val=0, n_test=10, batch_size=20)
    record = StepLosses()
    every = 3
    trainer = cpu_trainer(
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        callbacks=[record],
        log_every_n_steps=every,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=LightningData(data))
    logging_steps = [s for s in range(20) if (s + 1) % every == 0]
    assert sorted({step for step, _, _ in module.calls}) == logging_steps
    assert {name for _, name, _ in module.calls} == {"train/loss", "train/sampled_depth"}
    assert all(value.device.type == "cpu" for _, _, value in module.calls)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == logging_steps
    for row in rows:
        assert float(row["train/loss"]) == pytest.approx(record.losses[int(row["step"])], 1e-6)
        assert 0 <= float(row["train/sampled_depth"]) <= 4
    assert trainer.progress_bar_metrics["train/loss"] == pytest.approx(
        record.losses[logging_steps[-1]], 1e-6
    )
