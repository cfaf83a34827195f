"""Survival modes: how a budget b = mean(p) = L_bar / L is spread over the L residual blocks.

- ``none``: p_l = 1 (no stochastic depth; the budget is 1 whatever is asked).
- ``uniform``: p_l = b (Huang et al. 2016; maximal regularization at init, Theorem 1).
- ``linear``: p_l = 1 - (l/L)(1 - p_L) (Huang et al.), with p_L = 1 - 2L(1 - b)/(L + 1) so that
  mean(p) = b exactly; feasible only for b >= (L - 1)/(2L) (p_L >= 0), about 0.5 (Sec. 6).
- ``sensemode``: p from the sensitivities S_l (Sec. 5), clipped to [p_min, 1] with the scale
  solved so that mean(p) = b: rule ``proportional`` p_l ∝ |S_l| (the paper's experiments, Sec. 6)
  or ``affine`` p_l = p_min + alpha |S_l| (Sec. 5). Feasible for b >= p_min.

Every mode returns a float64 tensor p with mean(p) = b (checked: ``met_budget``), or raises
``ConfigError`` naming the option that makes it impossible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from sdexp.errors import ConfigError


def check_budget(budget: float) -> float:
    if not 0.0 < budget <= 1.0:
        raise ConfigError(
            "budget", f"the mean survival probability L_bar/L must lie in (0, 1], got {budget}"
        )
    return float(budget)


class BudgetMissedError(RuntimeError):
    """A mode's survival probabilities miss the budget (a bug: the run fails, never silently)."""


def met_budget(survival: Tensor, budget: float, mode: str, tolerance: float = 1e-6) -> Tensor:
    """``survival`` after checking mean(p) = b to ``tolerance``."""
    if abs(survival.mean().item() - budget) > tolerance:
        raise BudgetMissedError(
            f"mode={mode} gave survival probabilities with mean {survival.mean().item():.9g} "
            f"for budget {budget}"
        )
    return survival


@dataclass(frozen=True)
class Mode:
    """A rule mapping a budget b to survival probabilities p_1..p_L with mean(p) = b."""

    name: ClassVar[str]
    needs_sensitivity: ClassVar[bool] = False

    def smallest_budget(self, num_blocks: int) -> float:
        return 0.0

    def effective_budget(self, budget: float) -> float:
        return budget

    def check(self, budget: float, num_blocks: int) -> float:
        """The budget this mode runs at with L = ``num_blocks`` blocks (1.0 for ``none``);
        ConfigError unless ``budget`` lies in (0, 1] and the mode can meet it."""
        check_budget(budget)
        smallest = self.smallest_budget(num_blocks)
        if budget < smallest:
            raise ConfigError("budget", self.infeasible(budget, num_blocks, smallest))
        return self.effective_budget(budget)

    def infeasible(self, budget: float, num_blocks: int, smallest: float) -> str:
        return f"mode={self.name} needs budget >= {smallest:.4g}, got {budget}"

    def survival(self, budget: float, num_blocks: int, sensitivity: Tensor | None = None) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class NoSD(Mode):
    """Every block always survives."""

    name: ClassVar[str] = "none"

    def effective_budget(self, budget: float) -> float:
        return 1.0

    def survival(self, budget, num_blocks, sensitivity=None):
        return torch.ones(num_blocks, dtype=torch.float64)


@dataclass(frozen=True)
class Uniform(Mode):
    """p_l = b for every block."""

    name: ClassVar[str] = "uniform"

    def survival(self, budget, num_blocks, sensitivity=None):
        self.check(budget, num_blocks)
        survival = torch.full((num_blocks,), float(budget), dtype=torch.float64)
        return met_budget(survival, budget, self.name)


@dataclass(frozen=True)
class Linear(Mode):
    """p_l = 1 - (l/L)(1 - p_L), the linear decay of Huang et al., at an exact budget."""

    name: ClassVar[str] = "linear"

    def smallest_budget(self, num_blocks: int) -> float:
        return (num_blocks - 1) / (2 * num_blocks)

    def infeasible(self, budget, num_blocks, smallest):
        return (
            f"mode=linear cannot meet budget={budget} with L={num_blocks} blocks: its smallest "
            f"budget is (L-1)/(2L) = {smallest:.4f} (p_L = 0). Use budget >= {smallest:.4f}, "
            f"or mode=uniform / mode=sensemode for smaller budgets"
        )

    @staticmethod
    def last_survival(budget: float, num_blocks: int) -> float:
        """p_L such that mean(p) = b: p_L = 1 - 2L(1 - b)/(L + 1)."""
        return 1.0 - 2.0 * num_blocks * (1.0 - budget) / (num_blocks + 1)

    def survival(self, budget, num_blocks, sensitivity=None):
        self.check(budget, num_blocks)
        p_last = self.last_survival(budget, num_blocks)
        depth = torch.arange(1, num_blocks + 1, dtype=torch.float64) / num_blocks
        # At the smallest budget p_L is 0 up to rounding (-2.2e-16 for L = 27 and 54): clamp.
        return met_budget((1.0 - depth * (1.0 - p_last)).clamp(0.0, 1.0), budget, self.name)


SENSEMODE_RULES = ("proportional", "affine")


@dataclass(frozen=True)
class SenseMode(Mode):
    """Survival from the sensitivities S_l = dL/d delta_l at delta = 1 (Sec. 5): ``rule``
    ``proportional`` p_l = clip(c |S_l|, p_min, 1) (Sec. 6) or ``affine`` p_l = clip(p_min +
    c |S_l|, p_min, 1) (Sec. 5), c >= 0 solved so that mean(p) = b; S_l is averaged over
    ``batches`` training batches at initialisation."""

    name: ClassVar[str] = "sensemode"
    needs_sensitivity: ClassVar[bool] = True
    rule: str = "proportional"
    p_min: float = 0.0
    batches: int = 8

    def __post_init__(self) -> None:
        if self.rule not in SENSEMODE_RULES:
            raise ConfigError("mode.rule", f"one of {list(SENSEMODE_RULES)}, got {self.rule!r}")
        if not 0.0 <= self.p_min < 1.0:
            raise ConfigError(
                "mode.p_min",
                f"the smallest survival probability must lie in [0, 1), got {self.p_min}",
            )
        if self.batches < 1:
            raise ConfigError("mode.batches", f"at least 1 batch, got {self.batches}")

    def smallest_budget(self, num_blocks: int) -> float:
        return self.p_min

    def infeasible(self, budget, num_blocks, smallest):
        return (
            f"mode=sensemode clips p to [p_min, 1], so budget must be >= "
            f"mode.p_min = {self.p_min}, got {budget}"
        )

    def survival(self, budget, num_blocks, sensitivity=None):
        self.check(budget, num_blocks)
        if sensitivity is None or sensitivity.numel() != num_blocks:
            raise ValueError(f"sensemode needs {num_blocks} sensitivities")
        s = sensitivity.detach().abs().to(torch.float64).cpu()
        base = self.p_min if self.rule == "affine" else 0.0
        scale = self.scale_for(budget, s, base)
        return met_budget((base + scale * s).clamp(self.p_min, 1.0), budget, self.name)

    def scale_for(self, budget: float, s: Tensor, base: float) -> float:
        """The c >= 0 with mean(clip(base + c |S|, p_min, 1)) = b, solved exactly: mean(p) is
        piecewise linear in c, so the root interpolates between two kinks, whatever the scale of
        S (1e15 for the plain Vanilla ResNet, where a root finder's tolerance gives c = 0)."""

        def mean_at(c: Tensor) -> Tensor:  # c: (K,) -> mean(p) at each, (K,)
            return (base + c[:, None] * s).clamp(self.p_min, 1.0).mean(1)

        nonzero = s[s > 0]
        kinks = torch.cat([(self.p_min - base) / nonzero, (1.0 - base) / nonzero])
        kinks = torch.unique(torch.cat([torch.zeros(1, dtype=s.dtype), kinks.clamp(min=0.0)]))
        means = mean_at(kinks)
        if means[0] >= budget:
            return 0.0
        if means[-1] < budget:
            raise ConfigError(
                "budget",
                f"mode=sensemode can reach a mean survival of at most {means[-1].item():.4f} "
                f"here: {len(s) - len(nonzero)} of {len(s)} blocks have zero sensitivity and "
                f"stay at p_min = {self.p_min}; got budget={budget}",
            )
        k = int(torch.searchsorted(means, torch.tensor([budget], dtype=s.dtype)).item())
        lo, hi = kinks[k - 1], kinks[k]
        fraction = (budget - means[k - 1]) / (means[k] - means[k - 1])
        return (lo + fraction * (hi - lo)).item()


MODES = {mode.name: mode for mode in (NoSD, Uniform, Linear, SenseMode)}
