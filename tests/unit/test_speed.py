"""The fast paths compute what the plain paths compute, and what they refuse (speed itself is
for ``scripts/bench.py`` and ``scripts/gpu_check.py``; CUDA graphs: ``tests/*/test_graphs.py``)."""

from __future__ import annotations

import pytest
import torch

from scripts.bench import dropout, forward_every_block, row_mask
from sdexp.errors import ConfigError
from sdexp.run.config import Speed, check_config, check_speed
from sdexp.run.module import StochasticDepthModule
from sdexp.survival import Uniform
from tests.helpers import cifar_resnet14


def module(model, **speed) -> StochasticDepthModule:
    return StochasticDepthModule(
        model, Uniform(), 0.5, "classification", 10, optimizer=torch.optim.SGD, speed=Speed(**speed)
    )


def test_training_masks_are_python_values():
    """The skip decision is made on the CPU: no tensor (and no device sync) per block."""
    model = cifar_resnet14().train()
    multipliers = model.gate.multipliers()
    assert all(m is None or isinstance(m, float) for m in multipliers)


@pytest.mark.parametrize("training", [False, True])
def test_channels_last_matches(training):
    x = torch.randn(4, 3, 32, 32)
    plain, fast = module(cifar_resnet14()), module(cifar_resnet14(), channels_last=True)
    assert fast.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain.train(training)
    fast.train(training)
    torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)  # same seed: same mask
    assert fast.model.gate.last_mask == plain.model.gate.last_mask


def test_baselines_compute_every_block():
    model = cifar_resnet14().train()
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


# --- no wait for the device at every step -------------------------------------------------------


# --- options and what they refuse ---------------------------------------------------------------


def test_fused_optimizer(make_config):
    module = StochasticDepthModule(
        cifar_resnet14(), Uniform(), 0.5, "classification", 10,
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
