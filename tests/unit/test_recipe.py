"""The training recipe: each choice of the reference code does what it says (a run's config and
results.json show which recipe trained it: tests/e2e/test_train.py)."""

from __future__ import annotations

import pytest
import torch

from sdexp.models import CifarResNet, VanillaResNet, ZeroPadShortcut
from sdexp.recipe import StepDecay
from sdexp.run.module import StochasticDepthModule
from sdexp.survival import Uniform


@pytest.mark.parametrize(("dropped_blocks", "moves"), [("decay", True), ("frozen", False)])
def test_the_update_of_a_dropped_block(dropped_blocks, moves):
    """After a step that used block 2, a step that drops it: with zero-filled gradients SGD
    still decays it and moves it by momentum; with none it leaves it as it was."""
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(4,), num_outputs=1, width=8, depth=2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    module = StochasticDepthModule(
        model, Uniform(), 1.0, "regression", 1, optimizer=None, dropped_blocks=dropped_blocks
    )
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    model.train()
    for survival in ([1.0, 1.0], [1.0, 0.0]):  # block 2 kept, then dropped
        model.gate.set_survival(survival)
        loss = torch.nn.functional.mse_loss(model(x), y)
        module.optimizer_zero_grad(0, 0, sgd)  # as Lightning: after the forward pass
        loss.backward()
        before = model.blocks[1].branch[1].weight.detach().clone()
        sgd.step()
    after = model.blocks[1].branch[1].weight.detach()
    assert model.gate.last_mask == [True, False]
    assert (not torch.equal(before, after)) == moves


def test_shortcuts_average_or_subsample():
    y = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = ZeroPadShortcut(2, 1, "avgpool")(y)
    strided = ZeroPadShortcut(2, 1, "stride")(y)
    assert pooled.shape == strided.shape == (1, 2, 2, 2)
    assert pooled[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # 2x2 means, as DownsampleB
    assert strided[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert pooled[0, 1].abs().sum() == strided[0, 1].abs().sum() == 0  # zero channels
    model = CifarResNet(depth=14, shortcut="stride")
    shortcuts = [b.shortcut for b in model.blocks if isinstance(b.shortcut, ZeroPadShortcut)]
    assert len(shortcuts) == 2 and {s.downsample for s in shortcuts} == {"stride"}


@pytest.mark.parametrize(("count_from", "first_decayed"), [(1, 81), (0, 82)])
def test_lr_steps_counted_from_the_first_epoch(count_from, first_decayed):
    """The reference code: lr x0.1 once the epoch, counted from 1, reaches 0.5 x 164."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = StepDecay(optimizer, 164, count_from=count_from)
    lrs = []
    for _ in range(164):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[first_decayed - 1] == 0.1 and lrs[first_decayed] == pytest.approx(0.01)
    assert lrs[first_decayed + 41] == pytest.approx(0.001)  # 0.75 x 164 = 123
