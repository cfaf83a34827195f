"""Residual networks with a stochastic-depth gate (Hayou & Ayed 2021, eq. 1 and eq. 3):

    y_0 = stem(x),   y_l = post(shortcut(y_{l-1}) + m_l * Psi_l(y_{l-1})),   out = head(y_L),

with L = ``num_blocks`` and the multiplier m_l from the gate (``sdexp.gate``).

- ``CifarResNet``: He et al.'s CIFAR ResNet (ResNet56: L = 27, ResNet110: L = 54) of Sec. 6;
  ``stable=True`` scales every branch by 1/sqrt(L) (the Stable ResNet, eq. 3).
- ``VanillaResNet``: the fully connected model of Sec. 2, Psi_l(y) = W_l phi(y), constant width N,
  He init N(0, 2/N); it flattens any input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdexp.errors import ConfigError
from sdexp.gate import Multiplier, SurvivalGate, branch_scale


class ResidualBlock(nn.Module):
    """post(shortcut(y) + m * branch(y)); only the shortcut runs when the block is dropped."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None, post=None) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()

    def forward(self, y: Tensor, multiplier: Multiplier) -> Tensor:
        skip = self.shortcut(y)
        if multiplier is None:
            # Dropped. ``post`` is skipped too: the identity, or a ReLU of a non-negative input
            # (a CIFAR block's input is a ReLU's output, which its shortcut only pools and pads).
            return skip
        branch = self.branch(y)
        if isinstance(multiplier, Tensor):  # a scalar, or one per row of the batch: (B,)
            if multiplier.dim() == 1:
                multiplier = multiplier.view(-1, *(1,) * (branch.dim() - 1))
            return self.post(skip + multiplier * branch)
        return self.post(skip.add(branch, alpha=multiplier))


class ResidualNetwork(nn.Module):
    """stem -> L gated residual blocks -> head; ``forward(x, delta)`` as in eq. 1 / eq. 3."""

    name = "residual"

    def __init__(
        self,
        stem: nn.Module,
        blocks: Sequence[ResidualBlock],
        head: nn.Module,
        stable: bool,
        inverted: bool = False,
        mask_seed: int = 0,
    ) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head
        self.stable = stable
        self.gate = SurvivalGate(
            len(self.blocks), branch_scale(len(self.blocks), stable), inverted, mask_seed
        )

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, delta: Tensor | None = None) -> Tensor:
        y = self.stem(x)
        for block, multiplier in zip(self.blocks, self.gate.multipliers(delta), strict=False):
            y = block(y, multiplier)
        return self.head(y)


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A: downsample (``avgpool``, as the code the paper builds on, or
    ``stride``: every ``stride``-th pixel, the ``legacy`` recipe), then append zero channels."""

    def __init__(self, stride: int, extra_channels: int, downsample: str = "avgpool") -> None:
        super().__init__()
        self.stride, self.extra_channels, self.downsample = stride, extra_channels, downsample

    def forward(self, y: Tensor) -> Tensor:
        if self.downsample == "avgpool":
            y = F.avg_pool2d(y, self.stride)
        else:
            y = y[:, :, :: self.stride, :: self.stride]
        return F.pad(y, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return (
            f"stride={self.stride}, extra_channels={self.extra_channels}, "
            f"downsample={self.downsample}"
        )


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def basic_block(
    in_channels: int, out_channels: int, stride: int, shortcut: str = "avgpool"
) -> ResidualBlock:
    """conv-BN-ReLU-conv-BN branch, ReLU after the addition."""
    branch = nn.Sequential(
        conv3x3(in_channels, out_channels, stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        conv3x3(out_channels, out_channels),
        nn.BatchNorm2d(out_channels),
    )
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = ZeroPadShortcut(stride, out_channels - in_channels, shortcut)
    return ResidualBlock(branch, downsample, post=nn.ReLU(inplace=True))


class CifarResNet(ResidualNetwork):
    """CIFAR ResNet of depth 6n + 2: three stages of n basic blocks at widths 16/32/64, L = 3n;
    ``stable``: the Stable ResNet of eq. 3, else eq. 1; ``shortcut``: see ``ZeroPadShortcut``."""

    @staticmethod
    def blocks_for(depth: int) -> int:
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(
                "model.depth", f"a CIFAR ResNet has depth 6n + 2 (20, 56, 110), got {depth}"
            )
        return 3 * ((depth - 2) // 6)

    def __init__(
        self,
        depth: int = 110,
        num_outputs: int = 10,
        input_shape: Sequence[int] = (3, 32, 32),
        widths: Sequence[int] = (16, 32, 64),
        stable: bool = True,
        inverted: bool = False,
        shortcut: Literal["avgpool", "stride"] = "avgpool",
        mask_seed: int = 0,
    ) -> None:
        if any(not isinstance(w, int) or w < 1 for w in widths) or len(widths) != 3:
            raise ConfigError(
                "model.widths", f"three positive integers (the stages' widths), got {widths}"
            )
        if len(input_shape) != 3:
            raise ConfigError(
                "model",
                f"a convolutional ResNet needs image input (C, H, W), got shape "
                f"{list(input_shape)}: use model=vanilla for vector data",
            )
        per_stage = self.blocks_for(depth) // 3
        stem = nn.Sequential(
            conv3x3(input_shape[0], widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks, channels = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(basic_block(channels, width, stride, shortcut))
                channels = width
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs)
        )
        super().__init__(stem, blocks, head, stable, inverted, mask_seed)
        self.name = f"resnet{depth}"
        for m in self.modules():  # BatchNorm's own init is already weight 1, bias 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def he_linear(in_features: int, out_features: int, bias: bool = False) -> nn.Linear:
    """A Linear layer with He init W ~ N(0, 2 / fan_in) and zero bias."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(layer.weight, std=math.sqrt(2.0 / in_features))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class VanillaResNet(ResidualNetwork):
    """y_0 = W_0 x,  y_l = y_{l-1} + delta_l * s * W_l phi(y_{l-1}),  out = W_out y_L + b (Sec. 2);
    ``depth`` is L, ``stable`` selects s = 1/sqrt(L) (eq. 3) or s = 1 (eq. 1)."""

    name = "vanilla"

    @staticmethod
    def blocks_for(depth: int) -> int:
        if depth < 1:
            raise ConfigError("model.depth", f"the Vanilla ResNet needs depth >= 1, got {depth}")
        return depth

    def __init__(
        self,
        input_shape: Sequence[int] = (256,),
        num_outputs: int = 1,
        width: int = 256,
        depth: int = 50,
        activation: str = "relu",
        stable: bool = True,
        inverted: bool = False,
        mask_seed: int = 0,
    ) -> None:
        if width < 1:
            raise ConfigError("model.width", f"a positive integer, got {width}")
        if activation not in ACTIVATIONS:
            raise ConfigError(
                "model.activation", f"one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        in_features = math.prod(input_shape)
        stem = nn.Sequential(nn.Flatten(), he_linear(in_features, width))
        blocks = [
            ResidualBlock(nn.Sequential(ACTIVATIONS[activation](), he_linear(width, width)))
            for _ in range(self.blocks_for(depth))
        ]
        head = he_linear(width, num_outputs, bias=True)
        super().__init__(stem, blocks, head, stable, inverted, mask_seed)


def compile_branches(model: ResidualNetwork) -> ResidualNetwork:
    """``torch.compile`` every residual branch in place (state_dict keys unchanged); the skip
    decision stays eager, so no random draw is frozen into a graph. One graph per block shape and
    train/eval mode: about 10 for the CIFAR ResNets, above Dynamo's default limit of 8."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    for block in model.blocks:
        block.branch.compile(dynamic=False)
    return model
