"""Kolmogorov-Arnold convolutions: learnable univariate functions on every input channel and kernel tap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, same_padding, strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.checks import check_at_least, check_odd, check_positive
from archetype.searchspace.types import Image, TensorType

_DOMAIN = 2.0
"""The radial basis centres span [-2, 2], where batch-normalised features mostly lie."""


class _KanConvModule(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, grid: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(-_DOMAIN, _DOMAIN, grid)[:, None, None], persistent=False)
        self.inv_width = (grid - 1) / (2 * _DOMAIN)  # one basis function per grid step
        padding = same_padding(kernel)
        self.spline = nn.Conv2d(cin * grid, cout, kernel, stride, padding, bias=False)
        self.base = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        b, _, h, w = x.shape
        basis = torch.exp(-(((x[:, :, None] - self.centres) * self.inv_width) ** 2))  # (B, C, grid, H, W)
        return self.bn(self.spline(basis.reshape(b, -1, h, w)) + self.base(F.silu(x)))


@operator(
    "kan_conv",
    family="kan",
    paper="KAN: Kolmogorov-Arnold Networks, arXiv:2404.19756; in convolutions: Convolutional Kolmogorov-Arnold "
    "Networks, arXiv:2406.13155; with Gaussian radial bases: Kolmogorov-Arnold Networks are Radial Basis Function "
    "Networks (FastKAN), arXiv:2405.06721",
)
@dataclass(frozen=True)
class KanConv(Operator):
    """KAN convolution: per channel and tap a SiLU base plus a learned sum of Gaussian radial bases, then batch norm."""

    width: int
    grid: int = 8
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32), "grid": (4, 8), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "stride")
        check_at_least(self, 2, "grid")
        check_odd(self, "kernel")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return _KanConvModule(x.C, self.width, self.kernel, self.stride, self.grid)

    def params(self, x: Image) -> int:
        spline = conv_params(x.C * self.grid, self.width, self.kernel)
        return spline + conv_params(x.C, self.width, self.kernel) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(x.C * (self.grid + 1), self.width, self.kernel, y.H, y.W)
