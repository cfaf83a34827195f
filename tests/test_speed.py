"""The fast paths compute what the plain paths compute (speed itself is for ``sdexp.bench``)."""

from __future__ import annotations

import pytest
import torch

from sdexp.bench import dropout, forward_every_block, main, row_mask
from sdexp.models import StableResNet, compile_branches
from sdexp.module import Speed, StochasticDepthModule
from sdexp.survival import Uniform
from sdexp.training import train
from tests.conftest import local_cifar


def module(model, **speed) -> StochasticDepthModule:
    return StochasticDepthModule(
        model, Uniform(), 0.5, "classification", 10, optimizer=torch.optim.SGD, speed=Speed(**speed)
    )


def resnet(seed: int = 0) -> StableResNet:
    torch.manual_seed(seed)
    model = StableResNet(depth=14, num_outputs=10, mask_seed=seed)
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
