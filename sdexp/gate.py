"""The stochastic-depth gate: which residual blocks run, and with what weight.

Hayou & Ayed (2021), eq. 1 and eq. 3: block l computes

    y_l = y_{l-1} + delta_l * s * Psi_l(y_{l-1}),   delta_l ~ Bernoulli(p_l),

with s = 1/sqrt(L) for the Stable ResNet (eq. 3) and s = 1 otherwise (eq. 1). Per forward pass
each block gets a *multiplier*: in training s, or ``None`` when its Bernoulli(p_l) draw (one per
block per step, shared by the batch) drops it, and then it is not computed at all (which is what
makes a small budget train faster); at evaluation p_l * s, the *average network*; with an
explicit real-valued ``delta`` ((L,) or one row per example, (B, L)) delta_l * s, differentiably.
``inverted=True`` (timm, torchvision) scales kept blocks by s / p_l and evaluates with s.

Masks come from a CPU ``torch.Generator`` seeded by the run's seed: no wait for an accelerator,
the same masks on every DDP rank, and its state in the ``state_dict``, so that a resumed run
draws what an uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

Multiplier = float | Tensor | None


def branch_scale(num_blocks: int, stable: bool) -> float:
    """s in eq. 3: 1/sqrt(L) for the Stable ResNet, 1 for the plain ResNet of eq. 1."""
    return 1.0 / math.sqrt(num_blocks) if stable else 1.0


class SurvivalGate(nn.Module):
    """Survival probabilities p (one per block) and the Bernoulli gate delta ~ Bernoulli(p)."""

    def __init__(
        self, num_blocks: int, scale: float = 1.0, inverted: bool = False, seed: int = 0
    ) -> None:
        super().__init__()
        self.num_blocks, self.scale, self.inverted = num_blocks, scale, inverted
        self.set_survival([1.0] * num_blocks)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_mask: list[bool] = [True] * num_blocks

    def set_survival(
        self,
        survival: Sequence[float],
        sensitivity: Sequence[float] | None = None,
        sensitivity_se: Sequence[float] | None = None,
    ):
        """Fix p (and record the sensitivities it came from, with their standard errors)."""
        survival = [float(p) for p in survival]
        if len(survival) != self.num_blocks:
            raise ValueError(
                f"expected {self.num_blocks} survival probabilities, got {len(survival)}"
            )
        if not all(0.0 <= p <= 1.0 for p in survival):
            raise ValueError(f"survival probabilities must lie in [0, 1], got {survival}")
        self.survival = survival
        self._survival_cpu = torch.tensor(survival)
        self.sensitivity = None if sensitivity is None else [float(s) for s in sensitivity]
        self.sensitivity_se = None if sensitivity_se is None else [float(s) for s in sensitivity_se]

    def sample(self) -> list[bool]:
        """One Bernoulli(p_l) draw per block, on the CPU; False means block l is dropped."""
        draws = torch.rand(self.num_blocks, generator=self.generator)
        self.last_mask = (draws < self._survival_cpu).tolist()
        return self.last_mask

    def multipliers(self, delta: Tensor | None = None) -> list[Multiplier]:
        """The weight of each residual branch in this forward pass (``None``: skip the block)."""
        s = self.scale
        if delta is not None:
            if delta.shape[-1] != self.num_blocks:
                raise ValueError(
                    f"delta has {delta.shape[-1]} entries for {self.num_blocks} blocks"
                )
            return [d * s for d in delta.unbind(-1)]
        if not self.training:  # the average network; a block with p_l = 0 was never trained
            return [None if p == 0 else s if self.inverted else p * s for p in self.survival]
        keep = self.sample()
        if self.inverted:
            return [s / p if k else None for k, p in zip(keep, self.survival, strict=False)]
        return [s if k else None for k in keep]

    def get_extra_state(self) -> dict:
        return {
            "survival": self.survival,
            "sensitivity": self.sensitivity,
            "sensitivity_se": self.sensitivity_se,
            "generator": self.generator.get_state(),
        }

    def set_extra_state(self, state: dict) -> None:
        self.set_survival(state["survival"], state["sensitivity"], state.get("sensitivity_se"))
        self.generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return (
            f"num_blocks={self.num_blocks}, scale={self.scale:.4g}, inverted={self.inverted}, "
            f"mean survival={sum(self.survival) / self.num_blocks:.4g}"
        )
