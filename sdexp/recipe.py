"""The training recipe: the choices around the model that decide how it is trained and judged.

The paper trains with the code of felixgwu/img_classification_pk_pytorch (footnote 4); the
``reference`` recipe (``conf/recipe/reference.yaml``) follows that code and names each choice
that can move a Table 2 cell. Two of them need code: the learning-rate steps counted from the
code's first epoch (``StepDecay``), and the optimizer update of a block that a step dropped
(``Recipe.dropped_blocks``, applied by ``sdexp.module``). The others are options of the data,
the model and the trainer. README's "Fidelity" section compares the recipes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import MultiStepLR

from sdexp.errors import ConfigError


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
