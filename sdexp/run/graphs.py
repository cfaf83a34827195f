"""CUDA graphs for the training step of a stochastic-depth network (``speed.cuda_graphs``).

On a GPU a Stable ResNet110 step is bound by launching its kernels from Python, not by arithmetic
(README "Performance"); a CUDA graph replays a captured sequence of kernels with one launch. The
blocks that run change at every step (any of 2^L subnetworks), so every piece that can run (the
stem, each block's kept path, the head with the loss) gets graphs of its own, forward and backward
(one ``make_graphed_callables`` call per piece). A step is Python around them
(``GraphedSteps.loss``): the gate draws delta on the CPU, a kept block replays its graph, a dropped
block runs its shortcut eagerly. Each piece is one autograd node, so the backward pass replays
exactly the blocks the forward pass ran. A batch of another shape (an epoch's last) runs eagerly.
The parameters and buffers must stay at their addresses: the network must not be moved or rebuilt
(``load_state_dict`` copies in place and is fine). A backward graph's gradients are static buffers,
which become ``.grad`` where it is None: before every backward pass a gradient must be None or a
tensor the training loop owns, never a buffer of an earlier step, which the next backward would add
to itself (``sdexp.recipe.StepGradients``).

With ``speed.compile_blocks`` every piece is compiled (``torch.compile``) before capture, so the
graphs replay Triton kernels that fuse BatchNorm, the ReLU, the multiplier and the shortcut's
addition around the convolutions; fusion reorders floating point, so the steps agree with eager
ones to rounding. The CPU tests inject an eager ``make_graphed`` (``scripts/emulated_graphs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from sdexp.errors import ConfigError
from sdexp.models import ResidualBlock, ResidualNetwork

#: ``make_graphed(module, sample_args) -> callable``, as ``torch.cuda.make_graphed_callables``.
MakeGraphed = Callable[[nn.Module, tuple[Tensor, ...]], Callable[..., Tensor]]


class Stem(nn.Module):
    """y_0 = stem(x): a piece of its own (the network's own ``stem`` stays eager)."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.stem = stem

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


class KeptPath(nn.Module):
    """Block l when the gate keeps it: post(shortcut(y) + multiplier * branch(y))."""

    def __init__(self, block: ResidualBlock, multiplier: float) -> None:
        super().__init__()
        self.block, self.multiplier = block, multiplier

    def forward(self, y: Tensor) -> Tensor:
        return self.block(y, self.multiplier)

    def extra_repr(self) -> str:
        return f"multiplier={self.multiplier:.4g}"


class HeadLoss(nn.Module):
    """loss(head(y_L), target): the loss is captured with the head."""

    def __init__(self, head: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.head, self.loss_fn = head, loss_fn

    def forward(self, y: Tensor, target: Tensor) -> Tensor:
        return self.loss_fn(self.head(y), target)


def kept_multipliers(network: ResidualNetwork) -> list[float | None]:
    """Each block's multiplier when the gate keeps it in training: s, or s / p_l in the inverted
    convention; None for a block with p_l = 0, which never runs."""
    gate = network.gate
    return [
        None if p == 0 else gate.scale / p if gate.inverted else gate.scale for p in gate.survival
    ]


@contextmanager
def without_autocast_cache(device_type: str) -> Iterator[None]:
    """The caller's autocast (if any) with its weight cache off, as capture requires."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    dtype = torch.get_autocast_dtype(device_type)
    with torch.autocast(device_type, dtype=dtype, cache_enabled=False):
        yield


@torch.no_grad()
def block_inputs(network: ResidualNetwork, x: Tensor) -> list[Tensor]:
    """The input of every block and of the head, with every block kept: sample arguments of
    the right shape, dtype and scale for capture (moves BatchNorm statistics: restore them)."""
    y, inputs = network.stem(x), []
    for block, multiplier in zip(network.blocks, kept_multipliers(network), strict=True):
        inputs.append(y)
        y = block(y, multiplier)
    return [*inputs, y]


def compiled(piece: nn.Module) -> nn.Module:
    """``piece`` with its forward compiled (static shapes), in place: the graphs captured from it
    read and update the network's own tensors."""
    piece.forward = torch.compile(piece.forward, dynamic=False)
    return piece


def activation(t: Tensor) -> Tensor:
    """A static input for capture of an activation: a copy that requires grad, as live ones do."""
    return t.detach().clone().requires_grad_(True)


class GraphedSteps:
    """The graphed pieces of ``network``'s training step, for batches shaped as ``(x, target)``."""

    def __init__(
        self,
        network: ResidualNetwork,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        x: Tensor,
        target: Tensor,
        make_graphed: MakeGraphed | None = None,
        compile_pieces: bool = False,
    ) -> None:
        if make_graphed is None:
            if x.device.type != "cuda":
                raise ConfigError(
                    "speed.cuda_graphs",
                    f"CUDA graphs need a CUDA device, and this run trains on {x.device.type}: "
                    "set speed.cuda_graphs=false",
                )
            make_graphed = torch.cuda.make_graphed_callables
        if not network.training:
            raise RuntimeError("capture the training step of a network in training mode")
        self.network = network
        self.signature = (x.shape, x.dtype, x.device, target.shape, target.dtype)
        self.multipliers = kept_multipliers(network)
        self.compiled = compile_pieces
        piece = compiled if compile_pieces else lambda module: module
        if compile_pieces:  # a piece compiles once per block shape and multiplier (the inverted
            # convention has one per block); above dynamo's recompile limit it would run eagerly
            limit = max(torch._dynamo.config.recompile_limit, 2 * network.num_blocks + 8)
            torch._dynamo.config.recompile_limit = limit
        saved = [(b, b.detach().clone()) for b in network.buffers()]
        with without_autocast_cache(x.device.type):
            inputs = block_inputs(network, x)
            self.stem = make_graphed(piece(Stem(network.stem)), (x.detach().clone(),))
            self.kept = [
                None if m is None else make_graphed(piece(KeptPath(block, m)), (activation(y),))
                for block, m, y in zip(network.blocks, self.multipliers, inputs, strict=False)
            ]
            head = piece(HeadLoss(network.head, loss_fn))
            self.head_loss = make_graphed(head, (activation(inputs[-1]), target.detach().clone()))
        with torch.no_grad():  # the warm-up iterations ran in training mode
            for buffer, value in saved:
                buffer.copy_(value)

    def matches(self, x: Tensor, target: Tensor) -> bool:
        """Whether the graphs can take this batch (else it runs eagerly)."""
        return (x.shape, x.dtype, x.device, target.shape, target.dtype) == self.signature

    def loss(self, x: Tensor, target: Tensor) -> Tensor:
        """One training forward pass: kept blocks replay their graphs, dropped ones run eagerly."""
        if not self.network.training:
            raise RuntimeError("the graphs are the training step: evaluate with the network")
        multipliers = self.network.gate.multipliers()  # a Python draw on the CPU, outside graphs
        y = self.stem(x)
        for index, (block, kept, m) in enumerate(
            zip(self.network.blocks, self.kept, multipliers, strict=True)
        ):
            if m is None:
                y = block(y, None)
                continue
            if m != self.multipliers[index]:
                raise RuntimeError(
                    f"block {index}: the gate's multiplier changed since capture "
                    f"({self.multipliers[index]} -> {m}): survival probabilities were reset"
                )
            y = kept(y)
        return self.head_loss(y, target)
