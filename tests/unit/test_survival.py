"""Survival modes meet the budget exactly; infeasible budgets are errors; Lemma 1's depth law."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdexp.errors import ConfigError
from sdexp.subnetwork import depth_distribution, depth_variance, expected_depth, lemma1_deviation
from sdexp.survival import Linear, NoSD, SenseMode, Uniform

BUDGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DEPTHS = [2, 27, 50, 54, 100]


def sensitivity(num_blocks: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_blocks, generator=g, dtype=torch.float64)  # signed, like real S_l


@pytest.mark.parametrize("num_blocks", DEPTHS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_mode_meets_the_budget(budget, num_blocks):
    modes = [Uniform(), SenseMode(), SenseMode(rule="affine", p_min=0.05)]
    if budget >= Linear().smallest_budget(num_blocks):
        modes.append(Linear())
    for mode in modes:
        p = mode.survival(budget, num_blocks, sensitivity(num_blocks))
        assert p.shape == (num_blocks,)
        assert abs(p.mean().item() - budget) < 1e-6, mode
        assert (p >= 0).all() and (p <= 1).all()


def test_none_keeps_every_block():
    assert NoSD().survival(0.3, 5).tolist() == [1.0] * 5
    assert NoSD().effective_budget(0.3) == 1.0


def test_linear_closed_form():
    L, b = 54, 0.7
    p = Linear().survival(b, L)
    p_last = 1 - 2 * L * (1 - b) / (L + 1)
    assert p[-1].item() == pytest.approx(p_last)
    expected = [1 - (l / L) * (1 - p_last) for l in range(1, L + 1)]  # noqa: E741
    np.testing.assert_allclose(p.numpy(), expected)
    assert (p.diff() < 0).all()
    # Huang et al.'s p_L = 0.5 (their parametrisation) is budget (3L - 1)/(4L) ≈ 0.75 here.
    assert Linear.last_survival((3 * L - 1) / (4 * L), L) == pytest.approx(0.5)


@pytest.mark.parametrize("num_blocks", [27, 54, 100])
def test_linear_smallest_budget(num_blocks):
    smallest = (num_blocks - 1) / (2 * num_blocks)
    p = Linear().survival(smallest, num_blocks)
    assert p[-1].item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match=r"smallest budget is \(L-1\)/\(2L\)") as error:
        Linear().survival(smallest - 0.01, num_blocks)
    assert error.value.option == "budget"


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.01, 2.0])
def test_budget_outside_unit_interval(budget):
    for mode in (NoSD(), Uniform(), Linear(), SenseMode()):
        with pytest.raises(ConfigError, match=r"budget.*\(0, 1\]"):
            mode.check(budget, 10)


def test_sensemode_rules():
    s = sensitivity(40)
    p = SenseMode().survival(0.3, 40, s)
    inside = (p > 0) & (p < 1)
    ratio = p[inside] / s.abs()[inside]
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))  # p_l ∝ |S_l| below the cap
    p = SenseMode(rule="affine", p_min=0.1).survival(0.3, 40, s)
    inside = (p > 0.1) & (p < 1)
    ratio = (p[inside] - 0.1) / s.abs()[inside]
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))  # p_l = p_min + alpha |S_l|
    # More sensitive layers survive more often.
    order = s.abs().argsort()
    assert (p[order].diff() >= -1e-12).all()


@pytest.mark.parametrize("rule", ["proportional", "affine"])
@pytest.mark.parametrize("p_min", [0.0, 0.05, 0.2])
def test_sensemode_bounds(rule, p_min):
    for budget in [p_min + 0.01, 0.5, 0.95]:
        p = SenseMode(rule=rule, p_min=p_min).survival(budget, 54, sensitivity(54, 3))
        assert p.min().item() >= p_min - 1e-12 and p.max().item() <= 1.0


def test_sensemode_at_p_min_is_uniform():
    p = SenseMode(p_min=0.2).survival(0.2, 10, sensitivity(10))
    assert torch.allclose(p, torch.full((10,), 0.2, dtype=torch.float64))


def test_sensemode_infeasible_budgets():
    with pytest.raises(ConfigError, match=r"mode.p_min = 0.3") as error:
        SenseMode(p_min=0.3).check(0.2, 54)
    assert error.value.option == "budget"
    s = torch.tensor([1.0, 2.0, 0.0, 0.0])  # two layers insensitive: mean(p) <= (2 + 2 p_min)/4
    with pytest.raises(ConfigError, match="zero sensitivity"):
        SenseMode(p_min=0.1).survival(0.8, 4, s)
    assert SenseMode(p_min=0.1).survival(0.55, 4, s).mean().item() == pytest.approx(0.55)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"rule": "inverse"}, "mode.rule"),
        ({"p_min": 1.0}, "mode.p_min"),
        ({"p_min": -0.1}, "mode.p_min"),
        ({"batches": 0}, "mode.batches"),
    ],
)
def test_sensemode_bad_options(options, option):
    with pytest.raises(ConfigError) as error:
        SenseMode(**options)
    assert error.value.option == option


def test_depth_distribution_is_poisson_binomial():
    p = Linear().survival(0.6, 30).numpy()
    pmf = depth_distribution(p)
    k = np.arange(len(pmf))
    assert pmf.sum() == pytest.approx(1.0)
    assert (pmf * k).sum() == pytest.approx(expected_depth(p))
    assert (pmf * k**2).sum() - (pmf * k).sum() ** 2 == pytest.approx(depth_variance(p))
    rng = np.random.default_rng(0)
    samples = (rng.random((200_000, 30)) < p).sum(1)
    empirical = np.bincount(samples, minlength=len(pmf)) / len(samples)
    assert np.abs(empirical - pmf).max() < 0.005


def test_uniform_has_the_largest_depth_variance():
    L, b = 100, 0.5
    uniform = depth_variance(Uniform().survival(b, L))
    others = [Linear().survival(b, L), SenseMode().survival(b, L, sensitivity(L))]
    assert all(depth_variance(p) < uniform for p in others)
    assert lemma1_deviation(Uniform().survival(b, L), 0.05) > lemma1_deviation(others[0], 0.05)


def test_lemma1_bound_holds():
    p = Uniform().survival(0.5, 100).numpy()
    bound = lemma1_deviation(p, 0.05)
    pmf = depth_distribution(p)
    deviation = np.abs(np.arange(101) - expected_depth(p))
    assert pmf[deviation > bound].sum() <= 0.05


@pytest.mark.parametrize("magnitude", [1e-12, 1.0, 1e15])
@pytest.mark.parametrize("rule", ["proportional", "affine"])
def test_sensemode_meets_the_budget_at_any_scale(magnitude, rule):
    """|S| around 1e14-1e15 (the plain Vanilla ResNet on the toy task) once gave p = 0 for every
    block at budget 0.3: the scale's root was below an absolute tolerance."""
    s = sensitivity(50, seed=4) * magnitude
    for budget in (0.05, 0.3, 0.7, 0.99):
        p = SenseMode(rule=rule, p_min=0.01 if rule == "affine" else 0.0).survival(budget, 50, s)
        assert abs(p.mean().item() - budget) < 1e-9
        assert (p > 0).sum() > 10  # not a collapse to p_min


def test_sensemode_with_sensitivities_over_many_orders_of_magnitude():
    s = torch.logspace(-10, 15, 40, dtype=torch.float64)
    p = SenseMode().survival(0.3, 40, s)
    assert abs(p.mean().item() - 0.3) < 1e-9
    assert p[-1].item() == 1.0 and 0 < p[0].item() < 1e-15
    assert p[0].item() / p[1].item() == pytest.approx((s[0] / s[1]).item())  # p_l ∝ |S_l|


def test_a_missed_budget_is_an_error():
    from sdexp.survival import BudgetMissedError, met_budget

    with pytest.raises(BudgetMissedError, match="mean 0.25"):
        met_budget(torch.tensor([0.2, 0.3], dtype=torch.float64), 0.3, "sensemode")


@pytest.mark.parametrize("num_blocks", [27, 54])
def test_linear_at_its_smallest_budget_is_a_valid_gate(num_blocks):
    """p_L = 1 - 2L(1 - b)/(L + 1) is -2.2e-16 at b = (L-1)/(2L) for L = 27, 54: clamped to 0."""
    from sdexp.gate import SurvivalGate

    p = Linear().survival((num_blocks - 1) / (2 * num_blocks), num_blocks)
    assert p.min().item() == 0.0
    SurvivalGate(num_blocks).set_survival(p.tolist())  # rejected values outside [0, 1] before
