"""Residual blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.layers import conv_bn
from archetype.searchspace.types import Image, TensorType


class _BasicBlockModule(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, width, 3, stride)
        self.conv2 = conv_bn(width, width, 3, act=None)
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == width else conv_bn(cin, width, 1, stride, act=None)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


@operator(
    "basic_block",
    family="residual",
    paper="Deep Residual Learning for Image Recognition (ResNet), arXiv:1512.03385",
)
@dataclass(frozen=True)
class BasicBlock(Operator):
    """Two 3x3 conv-bn layers plus a shortcut (1x1 projection when the shape changes)."""

    width: int
    stride: int = 1
    domain: ClassVar = {"width": (16, 32, 64), "stride": (1, 2)}

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return _BasicBlockModule(x.C, self.width, self.stride)

    def _projects(self, x: Image) -> bool:
        return self.stride != 1 or x.C != self.width

    def params(self, x: Image) -> int:
        total = conv_params(x.C, self.width, 3) + conv_params(self.width, self.width, 3) + 2 * bn_params(self.width)
        if self._projects(x):
            total += conv_params(x.C, self.width, 1) + bn_params(self.width)
        return total

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        total = conv_macs(x.C, self.width, 3, y.H, y.W) + conv_macs(self.width, self.width, 3, y.H, y.W)
        if self._projects(x):
            total += conv_macs(x.C, self.width, 1, y.H, y.W)
        return total
