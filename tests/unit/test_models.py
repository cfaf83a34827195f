"""The residual networks of Sec. 2 beyond the gate (tests/unit/test_gate.py): the CIFAR ResNet on
other inputs."""

from __future__ import annotations

import torch

from sdexp.models import CifarResNet


def test_cifar_resnet_takes_one_channel_8x8():
    model = CifarResNet(20, 10, input_shape=(1, 8, 8))
    assert model.num_blocks == 9 and model.name == "resnet20"
    model.gate.set_survival([0.5] * 9)
    x = torch.randn(4, 1, 8, 8)
    assert model(x).shape == (4, 10)  # 8x8 -> 4x4 -> 2x2 -> pooled
    model.eval()
    assert model(x).shape == (4, 10)
