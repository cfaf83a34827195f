"""Layer sensitivities S_l = L(W; 1) - L(W; 1_l) (Sec. 5), the input of SenseMode.

``sensitivities``: the first-order estimate S_l ≈ dL/d delta_l at delta = 1, all L of them from
one backward pass per batch; the exact ``removal_sensitivities`` (L + 1 forward passes) is kept
for checks. Both use batch statistics without touching BatchNorm's running ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from sdexp.models import ResidualNetwork

Loss = Callable[[Tensor, Tensor], Tensor]


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Training-mode forward passes that leave BatchNorm running statistics untouched."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training, tracked = model.training, [m.track_running_stats for m in norms]
    model.train()
    for m in norms:
        m.track_running_stats = False  # batch statistics, no update of running_mean/var
    try:
        yield
    finally:
        for m, t in zip(norms, tracked, strict=False):
            m.track_running_stats = t
        model.train(was_training)


class Sensitivity(NamedTuple):
    """S_l over ``batches`` batches: the mean and its standard error (None from one batch)."""

    mean: Tensor
    standard_error: Tensor | None
    batches: int


def sensitivity_samples(
    model: ResidualNetwork, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: Loss
) -> Tensor:
    """dL/d delta_l at delta = 1 on each of ``batches``, shape (batches, L); one backward each."""
    device = next(model.parameters()).device
    delta = torch.ones(model.num_blocks, device=device, requires_grad=True)
    samples = []
    with batch_statistics(model):
        for x, y in batches:
            loss = loss_fn(model(x, delta=delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            samples.append(grad)
    if not samples:
        raise ValueError("no batches to compute sensitivities on")
    return torch.stack(samples).detach()


def summarize(samples: Tensor) -> Sensitivity:
    """The mean of per-batch sensitivities (summed in batch order, as a running total would
    be) and its standard error."""
    total = torch.zeros_like(samples[0])
    for grad in samples:
        total += grad
    count = len(samples)
    error = samples.std(0) / math.sqrt(count) if count > 1 else None
    return Sensitivity(total / count, error, count)


def sensitivities(
    model: ResidualNetwork, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: Loss
) -> Tensor:
    """Mean over ``batches`` of dL/d delta_l at delta = 1, shape (L,); one backward per batch."""
    return summarize(sensitivity_samples(model, batches, loss_fn)).mean


@torch.no_grad()
def removal_sensitivities(model: ResidualNetwork, x: Tensor, y: Tensor, loss_fn: Loss) -> Tensor:
    """Exact S_l = L(W; 1) - L(W; 1_l) on one batch, with L + 1 forward passes."""
    ones = torch.ones(model.num_blocks, device=x.device)
    with batch_statistics(model):
        full = loss_fn(model(x, delta=ones), y)
        removed = []
        for layer in range(model.num_blocks):
            delta = ones.clone()
            delta[layer] = 0.0
            removed.append(loss_fn(model(x, delta=delta), y))
    return full - torch.stack(removed)
