"""The fast paths compute what the plain paths compute, and what they refuse (speed itself is
for ``scripts/bench.py`` and ``scripts/gpu_check.py``; CUDA graphs: ``tests/test_graphs.py``)."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from scripts.bench import dropout, forward_every_block, main, row_mask
from sdexp.config import Speed, check_config, check_speed
from sdexp.data import ToyDataModule
from sdexp.errors import ConfigError
from sdexp.models import CifarResNet, VanillaResNet, compile_branches
from sdexp.module import LightningData, StochasticDepthModule
from sdexp.survival import Uniform
from sdexp.training import train
from tests.conftest import FAST_TOY, local_cifar, run_train


def module(model, **speed) -> StochasticDepthModule:
    return StochasticDepthModule(
        model, Uniform(), 0.5, "classification", 10, optimizer=torch.optim.SGD, speed=Speed(**speed)
    )


def resnet(seed: int = 0) -> CifarResNet:
    torch.manual_seed(seed)
    model = CifarResNet(depth=14, num_outputs=10, mask_seed=seed)
    model.gate.set_survival([0.5] * model.num_blocks)
    return model


def test_training_masks_are_python_values():
    """The skip decision is made on the CPU: no tensor (and no device sync) per block."""
    model = resnet().train()
    multipliers = model.gate.multipliers()
    assert all(m is None or isinstance(m, float) for m in multipliers)


@pytest.mark.parametrize("training", [False, True])
def test_channels_last_matches(training):
    x = torch.randn(4, 3, 32, 32)
    plain, fast = module(resnet()), module(resnet(), channels_last=True)
    assert fast.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain.train(training)
    fast.train(training)
    torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)  # same seed: same mask
    assert fast.model.gate.last_mask == plain.model.gate.last_mask


@pytest.mark.slow
def test_compiled_branches_match():
    x = torch.randn(2, 3, 32, 32)
    plain = resnet().eval()
    fast = compile_branches(resnet()).eval()
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints stay compatible
    torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    fast.train()
    plain.train()
    torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    assert fast.gate.last_mask == plain.gate.last_mask and not all(fast.gate.last_mask)


def test_baselines_compute_every_block():
    model = resnet().train()
    calls = []
    for block in model.blocks:
        block.branch.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    for op in (row_mask, dropout):
        calls.clear()
        forward_every_block(model, x, op)
        assert len(calls) == model.num_blocks
    # with p = 1 both are the plain network
    model.gate.set_survival([1.0] * model.num_blocks)
    model.eval()
    torch.testing.assert_close(forward_every_block(model, x, row_mask), model(x))


def test_bf16_autocast_run(make_config, cifar_root):
    cfg = make_config(
        *local_cifar(cifar_root),
        "dataset.val_size=20",
        "dataset.batch_size=50",
        "model=resnet56",
        "model.depth=14",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "trainer.enable_progress_bar=false",
        "speed.channels_last=true",
        "logger=none",
    )
    result = train(cfg)
    assert result.status == "ok" and 0 <= result.test <= 100


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


# --- no wait for the device at every step -------------------------------------------------------


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
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        callbacks=[record],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
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


# --- options and what they refuse ---------------------------------------------------------------


def test_fused_optimizer(make_config):
    module = StochasticDepthModule(
        resnet(), Uniform(), 0.5, "classification", 10,
        optimizer=lambda p, **kw: torch.optim.SGD(p, lr=0.1, momentum=0.9, **kw),
        speed=Speed(fused_optimizer=True),
    )  # fmt: skip
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"]
    assert all("momentum_buffer" in optimizer.state[p] for p in module.parameters())
    check_config(make_config("speed.fused_optimizer=true", "logger=none"))
    with pytest.raises(ConfigError, match="speed.fused_optimizer: LBFGS has no fused"):
        check_speed({"fused_optimizer": True}, {}, torch.optim.LBFGS)


def test_cuda_graphs_are_refused_on_a_cpu(make_config):
    with pytest.raises(ConfigError, match=r"^speed.cuda_graphs: CUDA graphs need a CUDA GPU"):
        check_config(make_config("speed.cuda_graphs=true", "trainer=cpu", "logger=none"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"this run has none \(no GPU\)"):
            check_config(make_config("speed.cuda_graphs=true", "logger=none"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer=ddp"], "not with trainer=ddp"),
        (["+trainer.accumulate_grad_batches=2"], "not with trainer.accumulate_grad_batches"),
    ],
)
def test_cuda_graphs_on_a_gpu_refuse(make_config, monkeypatch, overrides, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_config(make_config("speed.cuda_graphs=true", "logger=none"))  # alone: accepted
    check_config(make_config("speed.cuda_graphs=true", "speed.compile_blocks=true", "logger=none"))
    with pytest.raises(ConfigError, match=message):
        check_config(make_config("speed.cuda_graphs=true", *overrides, "logger=none"))


@pytest.mark.slow
def test_cli_refuses_cuda_graphs_on_a_cpu(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train(*FAST_TOY, "speed.cuda_graphs=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: speed.cuda_graphs: CUDA graphs need a CUDA GPU")
    assert "Traceback" not in done.stderr
    written = {p.name for p in run_dir.iterdir()} if run_dir.exists() else set()
    assert written <= {".hydra", "train.log"}
