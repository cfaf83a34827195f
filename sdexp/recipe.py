"""The training recipe: the choices around the model that decide how it is trained and judged.

The paper trains with the code of felixgwu/img_classification_pk_pytorch (footnote 4); the
``reference`` recipe (``conf/recipe/reference.yaml``) follows that code and names each choice
that can move a Table 2 cell. Two of them need code: the learning-rate steps counted from the
code's first epoch (``StepDecay``), and the optimizer update of a block that a step dropped
(``Recipe.dropped_blocks``, applied by ``StepGradients`` at every step; ``start_momentum`` keeps
fused SGD to it). The others are options of the data, the model and the trainer. README's
"Fidelity" section compares the recipes.
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
    """The recipe's choices that have no other home (``cfg.recipe``).

    - ``dropped_blocks``: the optimizer update of a block a step dropped. ``decay``: its
      gradient is zero, not missing, so SGD still applies weight decay and momentum to it, as
      PyTorch 1.x's ``zero_grad`` did in the reference code and Huang et al.'s ``gradients:zero()``;
      ``frozen``: no gradient, so no update at all (only the sampled subnetwork moves, Sec. 1).
    - ``report``: the test metric that is the run's number: ``best``, of the checkpoint with the
      best validation metric (the reference code's ``model_best``, Huang et al.'s "selected by
      best validation error"), or ``final``, of the last epoch's model.
    - ``shortcut``: how a CIFAR ResNet downsamples its shortcut (``sdexp.models``).
    - ``normalize``: standardise CIFAR's channels, or only scale pixels to [0, 1].
    """

    name: str
    dropped_blocks: Literal["decay", "frozen"] = "decay"
    report: Literal["best", "final"] = "best"
    shortcut: Literal["avgpool", "stride"] = "avgpool"
    normalize: bool = False


class StepDecay(MultiStepLR):
    """lr x ``gamma`` at each fraction f of the ``total_epochs`` E: from the first epoch e with
    e >= f E, epochs counted from ``count_from``.

    The reference code counts from 1 (``utils.adjust_learning_rate``: x0.1 from epoch 82 of 164,
    x0.01 from 123), Huang et al. too; counting from 0 decays one epoch later (the ``legacy``
    recipe). MultiStepLR counts its epochs from 0, hence the milestones ceil(f E) - count_from.
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
    """Clears a network's gradients between a step's forward pass and its backward pass, as
    the recipe's ``dropped_blocks`` says, for the mask that forward pass drew.

    Every gradient the backward pass writes starts as None, so autograd takes the new gradient
    as it is (under ``speed.cuda_graphs``, a graph's static buffer; no copy), instead of adding
    it to a zero-filled one with a kernel per parameter. The blocks the step dropped:
    ``frozen``: None too, and the optimizer skips them; ``decay``: a gradient of zeros of this
    object's own (one per parameter, zeroed again with one fused kernel at every use), so SGD
    applies weight decay and momentum to them, at every step (the code the paper builds on
    zero-fills its gradients; only its first step has none). A gradient is so never a graph's
    buffer left over from an earlier step, which a zero-fill and the next backward pass would
    add to itself (``sdexp.run.graphs``).
    """

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

    Fused SGD (PyTorch 2.11 to 2.14) creates its momentum buffers only at a step where all are
    missing, and fails at a step where some exist and some do not: a block that ``frozen``
    dropped at the first step and keeps at a later one. Zeros are SGD's own start: its first
    step sets buf = g, and mu * 0 + (1 - dampening) g = g with dampening 0, bit for bit.
    """
    for group in optimizer.param_groups:
        if not group.get("fused") or not group.get("momentum"):
            continue
        if group.get("dampening"):
            raise ConfigError("speed.fused_optimizer", "needs optimizer.dampening=0")
        for p in group["params"]:
            optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
