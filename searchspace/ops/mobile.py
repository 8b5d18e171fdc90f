"""Mobile blocks: depthwise-separable convolutions and inverted residuals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.errors import SpecError
from archetype.searchspace.cost import bn_params, conv_macs, conv_params, strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.layers import conv_bn
from archetype.searchspace.types import Image, TensorType


def _check_kernel(op: Operator, kernel: int) -> None:
    if kernel < 1 or kernel % 2 == 0:
        raise SpecError(f"operator '{op.name}': kernel must be odd and positive, got {kernel}")


@operator(
    "dwsep_conv",
    family="mobile",
    paper="Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357",
)
@dataclass(frozen=True)
class DepthwiseSeparableConv(Operator):
    """Depthwise k x k then pointwise 1 x 1, each with batch norm and ReLU."""

    width: int
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32, 64), "kernel": (3, 5), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_kernel(self, self.kernel)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(
            conv_bn(x.C, x.C, self.kernel, self.stride, groups=x.C),  # (B, C, H/s, W/s)
            conv_bn(x.C, self.width, 1),  # (B, width, H/s, W/s)
        )

    def params(self, x: Image) -> int:
        return (
            conv_params(x.C, x.C, self.kernel, groups=x.C) + bn_params(x.C)
            + conv_params(x.C, self.width, 1) + bn_params(self.width)
        )

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(x.C, x.C, self.kernel, y.H, y.W, groups=x.C) + conv_macs(x.C, self.width, 1, y.H, y.W)


class _InvertedResidualModule(nn.Module):
    def __init__(self, body: nn.Module, residual: bool) -> None:
        super().__init__()
        self.body = body
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


@operator(
    "inverted_residual",
    family="mobile",
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381",
)
@dataclass(frozen=True)
class InvertedResidual(Operator):
    """Expand 1x1, depthwise k x k, linear 1x1 projection; a skip when the shape is kept."""

    width: int
    expand: int = 6
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32, 64), "expand": (1, 3, 6), "kernel": (3, 5), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_kernel(self, self.kernel)
        if self.expand < 1:
            raise SpecError(f"operator 'inverted_residual': expand must be >= 1, got {self.expand}")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def _hidden(self, x: Image) -> int:
        return x.C * self.expand

    def build(self, x: Image) -> nn.Module:
        hidden = self._hidden(x)
        layers: list[nn.Module] = []
        if self.expand != 1:
            layers.append(conv_bn(x.C, hidden, 1, act="relu6"))  # (B, C*e, H, W)
        layers.append(conv_bn(hidden, hidden, self.kernel, self.stride, groups=hidden, act="relu6"))
        layers.append(conv_bn(hidden, self.width, 1, act=None))  # (B, width, H/s, W/s)
        return _InvertedResidualModule(nn.Sequential(*layers), self.output_type(x) == x)

    def params(self, x: Image) -> int:
        hidden = self._hidden(x)
        total = conv_params(hidden, hidden, self.kernel, groups=hidden) + bn_params(hidden)
        total += conv_params(hidden, self.width, 1) + bn_params(self.width)
        if self.expand != 1:
            total += conv_params(x.C, hidden, 1) + bn_params(hidden)
        return total

    def macs(self, x: Image) -> int:
        hidden, y = self._hidden(x), self.output_type(x)
        total = conv_macs(hidden, hidden, self.kernel, y.H, y.W, groups=hidden)
        total += conv_macs(hidden, self.width, 1, y.H, y.W)
        if self.expand != 1:
            total += conv_macs(x.C, hidden, 1, x.H, x.W)
        return total
