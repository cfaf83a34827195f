"""The training recipe: the choices around the model that decide how it is trained and judged.

The ``reference`` recipe (``conf/recipe/reference.yaml``) follows the code the paper trains with
(felixgwu/img_classification_pk_pytorch, footnote 4). Two of its choices need code: the
learning-rate steps counted from the first epoch (``StepDecay``), and the optimizer update of a
block a step dropped (``Recipe.dropped_blocks``, applied by ``StepGradients``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import MultiStepLR

from sdexp.errors import ConfigError

if TYPE_CHECKING:
    from sdexp.models import ResidualNetwork


@dataclass(frozen=True)
class Recipe:
    """The recipe's choices that have no other home (``cfg.recipe``): ``dropped_blocks``
    (``decay``: a dropped block's gradient is zero, so SGD still applies weight decay and
    momentum, as the reference code; ``frozen``: only the sampled subnetwork moves, Sec. 1);
    ``report`` (the test metric of the ``best``-validation checkpoint or the ``final`` model);
    ``shortcut`` (``sdexp.models``); ``normalize`` CIFAR's channels."""

    name: str
    dropped_blocks: Literal["decay", "frozen"] = "decay"
    report: Literal["best", "final"] = "best"
    shortcut: Literal["avgpool", "stride"] = "avgpool"
    normalize: bool = False


class StepDecay(MultiStepLR):
    """lr x ``gamma`` from the first epoch e >= f E, for each fraction f of the ``total_epochs``
    E, epochs counted from ``count_from``: the reference code counts from 1 (x0.1 from epoch 82
    of 164), the ``legacy`` recipe from 0; MultiStepLR from 0, hence ceil(f E) - count_from.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_epochs: int,
        fractions: Sequence[float] = (0.5, 0.75),
        gamma: float = 0.1,
        count_from: Literal[0, 1] = 1,
    ) -> None:
        if not all(0.0 < f <= 1.0 for f in fractions):
            raise ConfigError("scheduler.fractions", f"fractions in (0, 1], got {list(fractions)}")
        if not gamma > 0.0:
            raise ConfigError("scheduler.gamma", f"a positive factor, got {gamma}")
        self.total_epochs, self.fractions = total_epochs, tuple(fractions)
        self.count_from = count_from
        milestones = [max(0, math.ceil(f * total_epochs) - count_from) for f in self.fractions]
        super().__init__(optimizer, milestones, gamma)


class StepGradients:
    """Clears a network's gradients before a step's backward pass, as ``dropped_blocks`` says
    for the mask its forward pass drew: None (autograd takes the new gradient as it is, never
    adding to a CUDA graph's old buffer), and for a dropped block under ``decay`` zeros of this
    object's own, re-zeroed by one fused kernel."""

    def __init__(self, network: ResidualNetwork, dropped_blocks: str) -> None:
        self.network, self.dropped_blocks = network, dropped_blocks
        self.blocks = [tuple(block.parameters()) for block in network.blocks]
        in_blocks = {id(p) for params in self.blocks for p in params}
        self.others = tuple(p for p in network.parameters() if id(p) not in in_blocks)
        self.zeros: dict[Tensor, Tensor] = {}

    def clear(self) -> None:
        """Before the backward pass of the forward pass that drew ``gate.last_mask``."""
        for p in self.others:
            p.grad = None
        handed = []
        decay = self.dropped_blocks == "decay"
        for kept, params in zip(self.network.gate.last_mask, self.blocks, strict=True):
            for p in params:
                if kept or not decay:
                    p.grad = None
                    continue
                if p not in self.zeros:
                    self.zeros[p] = torch.zeros_like(p)
                p.grad = self.zeros[p]
                handed.append(p.grad)
        if handed:
            torch._foreach_zero_(handed)


def start_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Zero momentum buffers for every parameter of a fused SGD, before its first step.

    Fused SGD fails at a step where some buffers exist and some do not (a block ``frozen``
    dropped at the first step). Zeros are SGD's own start, bit for bit, with dampening 0.
    """
    for group in optimizer.param_groups:
        if not group.get("fused") or not group.get("momentum"):
            continue
        if group.get("dampening"):
            raise ConfigError("speed.fused_optimizer", "needs optimizer.dampening=0")
        for p in group["params"]:
            optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
