"""Survival modes: how a budget b = mean(p) = L_bar / L is spread over the L residual blocks.

- ``none``: p_l = 1 (no stochastic depth; the budget is 1 whatever is asked).
- ``uniform``: p_l = b (Huang et al. 2016; maximal regularization at init, Theorem 1).
- ``linear``: p_l = 1 - (l/L)(1 - p_L) (Huang et al.), with p_L = 1 - 2L(1 - b)/(L + 1) so that
  mean(p) = b exactly; feasible only for b >= (L - 1)/(2L) (p_L >= 0), about 0.5 (Sec. 6).
- ``sensemode``: p from the sensitivities S_l (Sec. 5), clipped to [p_min, 1] with the scale
  solved so that mean(p) = b: rule ``proportional`` p_l ∝ |S_l| (the paper's experiments, Sec. 6)
  or ``affine`` p_l = p_min + alpha |S_l| (Sec. 5). Feasible for b >= p_min.

Every mode returns a float64 tensor p with mean(p) = b, or raises ``ConfigError`` naming the
option that makes it impossible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from scipy.optimize import brentq
from torch import Tensor

from sdexp.errors import ConfigError


def check_budget(budget: float) -> float:
    if not 0.0 < budget <= 1.0:
        raise ConfigError(
            "budget", f"the mean survival probability L_bar/L must lie in (0, 1], got {budget}"
        )
    return float(budget)


@dataclass(frozen=True)
class Mode:
    """A rule mapping a budget b to survival probabilities p_1..p_L with mean(p) = b."""

    name: ClassVar[str]
    needs_sensitivity: ClassVar[bool] = False

    def smallest_budget(self, num_blocks: int) -> float:
        return 0.0

    def effective_budget(self, budget: float) -> float:
        return budget

    def check(self, budget: float, num_blocks: int) -> None:
        """Raise ConfigError unless this mode can meet ``budget`` with L = num_blocks blocks."""
        check_budget(budget)
        smallest = self.smallest_budget(num_blocks)
        if budget < smallest:
            raise ConfigError("budget", self.infeasible(budget, num_blocks, smallest))

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
        return torch.full((num_blocks,), float(budget), dtype=torch.float64)


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
        return 1.0 - depth * (1.0 - p_last)


SENSEMODE_RULES = ("proportional", "affine")


@dataclass(frozen=True)
class SenseMode(Mode):
    """Survival from the sensitivities S_l = dL/d delta_l at delta = 1 (Sec. 5).

    ``rule``: ``proportional`` p_l = clip(c |S_l|, p_min, 1) (Sec. 6) or ``affine``
    p_l = clip(p_min + c |S_l|, p_min, 1) (Sec. 5); c >= 0 is solved so that mean(p) = b.
    ``batches``: training batches the sensitivities are averaged over at initialisation.
    """

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

        def survival_at(c: float) -> Tensor:
            return (base + c * s).clamp(self.p_min, 1.0)

        def excess(c: float) -> float:
            return survival_at(c).mean().item() - budget

        # mean(p) grows with c from p_min (c = 0) to its ceiling, reached once c|S_l| >= 1 for
        # every l with S_l != 0; blocks with S_l = 0 stay at p_min.
        if excess(0.0) >= 0.0:
            return survival_at(0.0)
        nonzero = s[s > 0]
        c_max = 1.0 / nonzero.min().item() if nonzero.numel() else 0.0
        if excess(c_max) < 0.0:
            ceiling = excess(c_max) + budget
            raise ConfigError(
                "budget",
                f"mode=sensemode can reach a mean survival of at most {ceiling:.4f} here: "
                f"{num_blocks - nonzero.numel()} of {num_blocks} blocks have zero sensitivity "
                f"and stay at p_min = {self.p_min}; got budget={budget}",
            )
        c = brentq(excess, 0.0, c_max, xtol=1e-15, rtol=1e-15, maxiter=500)
        return survival_at(c)


MODES = {mode.name: mode for mode in (NoSD, Uniform, Linear, SenseMode)}
