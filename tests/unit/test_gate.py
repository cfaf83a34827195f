"""The gate: dropped blocks cost nothing; eval is the average network; keep rates match p."""

from __future__ import annotations

import math

import pytest
import torch

from sdexp.gate import SurvivalGate
from sdexp.models import CifarResNet, VanillaResNet


def branch_calls(model) -> list[int]:
    """Count forward calls of every residual branch."""
    calls = [0] * model.num_blocks
    for i, block in enumerate(model.blocks):
        block.branch.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_dropped_block_is_not_computed_and_gets_no_gradient():
    torch.manual_seed(0)
    model = CifarResNet(depth=20, num_outputs=10)
    model.gate.set_survival([0.5] * model.num_blocks)
    calls = branch_calls(model)
    stats_before = [b.branch[1].running_mean.clone() for b in model.blocks]
    model.train()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    mask = model.gate.last_mask
    assert 0 < sum(mask) < model.num_blocks  # seed 0 drops some blocks and keeps some
    for kept, count, block, before in zip(mask, calls, model.blocks, stats_before, strict=True):
        assert count == int(kept)
        grads = [p.grad for p in block.parameters()]
        if kept:
            assert all(g is not None for g in grads)
            assert not torch.equal(block.branch[1].running_mean, before)
        else:
            assert all(g is None for g in grads)
            assert torch.equal(block.branch[1].running_mean, before)  # BN statistics untouched


@pytest.mark.parametrize("inverted", [False, True])
def test_eval_is_the_average_network(inverted):
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(16,), num_outputs=3, width=32, depth=10, inverted=inverted)
    p = torch.linspace(0.2, 0.9, 10)
    model.gate.set_survival(p.tolist())
    x = torch.randn(8, 16)
    model.eval()
    average = model(x, delta=torch.ones(10) if inverted else p)
    torch.testing.assert_close(model(x), average)


def test_cifar_eval_is_the_average_network():
    torch.manual_seed(0)
    model = CifarResNet(depth=20, num_outputs=10).eval()
    p = torch.linspace(0.3, 1.0, model.num_blocks)
    model.gate.set_survival(p.tolist())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x, delta=p))


@pytest.mark.parametrize("inverted", [False, True])
def test_training_multipliers(inverted):
    gate = SurvivalGate(4, scale=0.5, inverted=inverted, seed=3)
    gate.set_survival([1.0, 0.0, 0.25, 0.5])
    for _ in range(20):
        m = gate.multipliers()
        assert m[0] == 0.5 and m[1] is None  # p = 1 always kept, p = 0 always dropped
        kept = [x for x in m[2:] if x is not None]
        expected = {0.5 / 0.25, 0.5 / 0.5} if inverted else {0.5}
        assert set(kept) <= expected


def test_keep_frequency_matches_survival():
    gate = SurvivalGate(5, seed=0)
    p = [0.1, 0.3, 0.5, 0.7, 0.95]
    gate.set_survival(p)
    steps = 20_000
    kept = torch.tensor([gate.sample() for _ in range(steps)], dtype=torch.float64).mean(0)
    for frequency, prob in zip(kept.tolist(), p, strict=True):
        assert abs(frequency - prob) < 4 * math.sqrt(prob * (1 - prob) / steps)


def test_masks_come_from_the_seed_and_resume_with_the_state():
    a, b = SurvivalGate(30, seed=7), SurvivalGate(30, seed=7)
    for gate in (a, b):
        gate.set_survival([0.5] * 30)
    assert [a.sample() for _ in range(5)] == [b.sample() for _ in range(5)]
    state = a.get_extra_state()
    expected = [a.sample() for _ in range(5)]
    c = SurvivalGate(30, seed=0)
    c.set_extra_state(state)
    assert [c.sample() for _ in range(5)] == expected
    assert c.survival == a.survival


def test_state_dict_carries_survival_and_generator():
    model = VanillaResNet(input_shape=(4,), width=8, depth=6, mask_seed=1)
    model.gate.set_survival(
        [0.2, 0.4, 0.6, 0.8, 1.0, 0.5], sensitivity=[1, 2, 3, 4, 5, 6], sensitivity_se=[0.5] * 6
    )
    model.train()
    model(torch.zeros(1, 4))
    state = model.state_dict()
    clone = VanillaResNet(input_shape=(4,), width=8, depth=6, mask_seed=99)
    clone.load_state_dict(state)
    assert clone.gate.survival == model.gate.survival
    assert clone.gate.sensitivity == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert clone.gate.sensitivity_se == [0.5] * 6
    assert [clone.gate.sample() for _ in range(3)] == [model.gate.sample() for _ in range(3)]


def test_explicit_delta_is_differentiable():
    model = VanillaResNet(input_shape=(4,), width=8, depth=6)
    delta = torch.full((6,), 0.5, requires_grad=True)
    model(torch.randn(3, 4), delta=delta).sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_stable_scaling():
    stable = VanillaResNet(input_shape=(4,), width=8, depth=16, stable=True)
    plain = VanillaResNet(input_shape=(4,), width=8, depth=16, stable=False)
    assert stable.gate.scale == pytest.approx(1 / 4) and plain.gate.scale == 1.0


def test_one_delta_per_row():
    """delta of shape (B, L): row i is the network with gate vector delta[i]."""
    torch.manual_seed(0)
    model = VanillaResNet(input_shape=(5,), num_outputs=2, width=5, depth=4)  # B == width
    x = torch.randn(5, 5)
    delta = torch.bernoulli(torch.full((5, 4), 0.5))
    rows = model(x, delta=delta)
    for i in range(5):
        torch.testing.assert_close(rows[i], model(x[i : i + 1], delta=delta[i])[0])


@pytest.mark.parametrize("inverted", [False, True])
def test_a_block_that_never_survives_has_no_weight_at_evaluation(inverted):
    """p_l = 0: the block is never trained; the average network weighs it by p_l = 0, and so
    must the inverted convention (it weighed it by s before)."""
    gate = SurvivalGate(3, scale=0.5, inverted=inverted)
    gate.set_survival([1.0, 0.0, 0.5])
    gate.eval()
    multipliers = gate.multipliers()
    assert multipliers[1] is None  # skipped: weight 0, not computed
    assert multipliers[0] == 0.5 and multipliers[2] == (0.5 if inverted else 0.25)


def test_a_checkpoint_from_before_standard_errors_loads():
    """Checkpoints written before the gate kept its sensitivities' standard errors still resume."""
    model = VanillaResNet(input_shape=(4,), width=8, depth=6)
    state = model.gate.get_extra_state()
    del state["sensitivity_se"]
    model.gate.set_extra_state(state)
    assert model.gate.sensitivity_se is None
