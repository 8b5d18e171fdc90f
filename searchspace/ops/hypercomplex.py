"""Parameterized hypercomplex convolutions: kernels built as sums of Kronecker products."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, same_padding, strided
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_at_least, check_multiple_of, check_odd, check_positive
from archetype.searchspace.types import Image, TensorType


class _PhmConvModule(nn.Module):
    """Conv, batch norm, ReLU, the conv's kernel being sum_i A_i ⊗ F_i over the two channel axes."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, n: int) -> None:
        super().__init__()
        self.stride, self.padding = stride, same_padding(kernel)
        self.rules = nn.Parameter(torch.empty(n, n, n))  # A_i: how the n x n blocks of the kernel mix
        self.filters = nn.Parameter(torch.empty(n, cout // n, cin // n, kernel, kernel))  # F_i
        nn.init.uniform_(self.rules, -1 / math.sqrt(n), 1 / math.sqrt(n))
        bound = 1 / math.sqrt(cin * kernel * kernel)  # the kernel sums n products: about Conv2d's default scale
        nn.init.uniform_(self.filters, -bound, bound)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def kernel(self) -> torch.Tensor:
        """sum_i kron(A_i, F_i): (cout, cin, k, k), entry [a*p + o, b*q + c] = sum_i A_i[a, b] F_i[o, c]."""
        n, p, q, k, _ = self.filters.shape
        a = self.rules[:, :, None, :, None, None, None]  # (n, n, 1, n, 1, 1, 1)
        f = self.filters[:, None, :, None]  # (n, 1, p, 1, q, k, k)
        return (a * f).sum(dim=0).reshape(n * p, n * q, k, k)  # element-wise: independent of the batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        y = F.conv2d(x, self.kernel(), stride=self.stride, padding=self.padding)
        return self.act(self.bn(y))  # (B, width, H/s, W/s)


@operator(
    "phm_conv",
    family="hypercomplex",
    paper="PHNNs: Lightweight Neural Networks via Parameterized Hypercomplex Convolutions, arXiv:2110.04176",
)
@dataclass(frozen=True)
class PhmConv(Operator):
    """Hypercomplex conv-bn-ReLU: the kernel is a sum of n Kronecker products, about 1/n of a conv's parameters."""

    width: int
    n: int = 4
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32), "n": (2, 4), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "stride")
        check_at_least(self, 2, "n")
        check_odd(self, "kernel")
        check_multiple_of(self, "width", self.n, "the kernel is made of n x n blocks")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.C % self.n:  # type: ignore[attr-defined]
            raise OperatorTypeError(f"operator '{self.name}' cannot split the channels of {x} into n={self.n} blocks")
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        self.output_type(x)
        return _PhmConvModule(x.C, self.width, self.kernel, self.stride, self.n)

    def params(self, x: Image) -> int:
        n = self.n
        return n**3 + n * (self.width // n) * (x.C // n) * self.kernel**2 + bn_params(self.width)

    def macs(self, x: Image) -> int:
        """The convolution's; building the kernel costs the same for any batch, so no sample's share counts."""
        y = self.output_type(x)
        return conv_macs(x.C, self.width, self.kernel, y.H, y.W)
