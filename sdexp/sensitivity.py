"""Layer sensitivities S_l = L(W; 1) - L(W; 1_l) (Sec. 5), the input of SenseMode.

``sensitivities`` uses the first-order estimate S_l ≈ dL/d delta_l at delta = 1: one forward and
one backward pass per batch give all L of them (the gate accepts a real-valued delta). The exact
``removal_sensitivities`` needs L + 1 forward passes per batch and is kept for checks.

Both run the network as it trains (BatchNorm on batch statistics) without touching the running
statistics, so computing them at initialisation leaves the model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

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


def sensitivities(
    model: ResidualNetwork, batches: Iterable[tuple[Tensor, Tensor]], loss_fn: Loss
) -> Tensor:
    """Mean over ``batches`` of dL/d delta_l at delta = 1, shape (L,); one backward per batch."""
    device = next(model.parameters()).device
    delta = torch.ones(model.num_blocks, device=device, requires_grad=True)
    total, count = torch.zeros(model.num_blocks, device=device), 0
    with batch_statistics(model):
        for x, y in batches:
            loss = loss_fn(model(x, delta=delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            total += grad
            count += 1
    if count == 0:
        raise ValueError("no batches to compute sensitivities on")
    return (total / count).detach()


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
