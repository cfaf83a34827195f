"""Probes of a residual network with one stochastic-depth mask per row.

The gate (``sdexp.gate``) shares one mask across a batch, as training does; the theory checks need
many masks at once, so each row here carries its own branch multipliers m_l = delta_l * s and drives
the model's own blocks (``block(y, m)`` = y + m * Psi_l(y), eq. 1 with s = 1 or eq. 3 with
s = 1/sqrt(L)). Nothing here re-implements a network.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from sdexp.models import ResidualNetwork
from sdexp.survival import MODES


def survival(mode: str, budget: float, num_blocks: int) -> Tensor:
    """p_1..p_L of a survival mode (``sdexp.survival``) with mean(p) = budget (float64)."""
    return MODES[mode]().survival(budget, num_blocks)


def sample_masks(survival: Tensor, num: int, generator: torch.Generator) -> Tensor:
    """``num`` independent masks delta ~ Bernoulli(p), shape (num, L) (float64, on the CPU)."""
    return torch.bernoulli(survival.expand(num, -1), generator=generator)


def hidden_layers(model: ResidualNetwork, x: Tensor, multipliers: Tensor) -> Iterator[Tensor]:
    """y_0, y_1, ..., y_L (Prop. 1, Theorem 2), block l weighted by ``multipliers[:, l - 1]``
    (R, L): delta_l * s, one mask per row). A generator: a caller keeps only what it needs."""
    y = model.stem(x)
    yield y
    for block, m in zip(model.blocks, multipliers.to(y.dtype).unbind(-1), strict=True):
        y = block(y, m)
        yield y


def network_output(model: ResidualNetwork, x: Tensor, multipliers: Tensor) -> Tensor:
    """y_out(x; delta) for one mask per row: the head applied to y_L."""
    *_, last = hidden_layers(model, x, multipliers)
    return model.head(last)


def information_discrepancy(
    model: ResidualNetwork, x: Tensor, delta: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """zeta_l(x) = J_l(x) z_l(x) (eq. 5), shape (n, L, o), at the mask ``delta`` (default 1).

    J_l = d y_out / d y_l and z_l = Psi_l(y_{l-1}), so d y_out / d delta_l = s J_l z_l: one backward
    pass per output coordinate through a per-row delta gives every layer and input at once.
    ``scale``: s (default: the model's own, 1/sqrt(L) if stable).
    """
    scale = model.gate.scale if scale is None else scale
    n, num_blocks = len(x), model.num_blocks
    delta = torch.ones(num_blocks) if delta is None else delta
    delta = delta.to(x.dtype).expand(n, num_blocks).clone().requires_grad_(True)
    with torch.enable_grad():
        out = network_output(model, x, delta * scale)
        columns = [
            torch.autograd.grad(out[:, i].sum(), delta, retain_graph=i + 1 < out.shape[1])[0]
            for i in range(out.shape[1])
        ]
    return torch.stack(columns, -1) / scale


def layer_regularizers(zeta: Tensor) -> Tensor:
    """g_l(W) = (2/n) sum_i ||zeta_l(x_i)||^2, shape (L,): eq. 6, quadratic loss (Hessian 2I)."""
    return 2.0 * zeta.double().pow(2).sum(-1).mean(0)


def gradient_norms(model: ResidualNetwork, x: Tensor, multipliers: Tensor) -> Tensor:
    """||grad_{y_l} loss||^2 for l = 0..L and every row, shape (R, L + 1) (Prop. 1), with
    loss = sum(y_out): Prop. 1 holds for any differentiable loss, and this one starts every backward
    pass at the same vector, so the ratios q_l measure the backward pass alone."""
    with torch.enable_grad():
        ys = list(hidden_layers(model, x.detach().requires_grad_(True), multipliers))
        grads = torch.autograd.grad(model.head(ys[-1]).sum(), ys)
    return torch.stack([g.double().pow(2).flatten(1).sum(1) for g in grads], 1)
