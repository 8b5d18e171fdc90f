"""Dynamic convolutions: kernels or sampling positions computed from the input (involution, deformable conv)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_odd, check_positive
from archetype.searchspace.ops.layers import conv_bn
from archetype.searchspace.types import Image, TensorType


class _InvolutionModule(nn.Module):
    def __init__(self, channels: int, kernel: int, groups: int, reduced: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        self.reduce = conv_bn(channels, reduced, 1, act="relu")
        self.span = nn.Conv2d(reduced, kernel * kernel * groups, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        taps = self.kernel * self.kernel
        kernels = self.span(self.reduce(x)).reshape(b, self.groups, taps, h * w)  # (B, G, K*K, HW): one per pixel
        patches = F.unfold(x, self.kernel, padding=(self.kernel - 1) // 2)  # (B, C*K*K, HW)
        patches = patches.reshape(b, self.groups, c // self.groups, taps, h * w)  # (B, G, C/G, K*K, HW)
        out = torch.einsum("bgckp,bgkp->bgcp", patches, kernels)  # (B, G, C/G, HW)
        return out.reshape(b, c, h, w)


@operator(
    "involution",
    family="dynamic-conv",
    paper="Involution: Inverting the Inherence of Convolution for Visual Recognition, arXiv:2103.06255",
)
@dataclass(frozen=True)
class Involution(Operator):
    """Involution: a K x K kernel per pixel and channel group, generated from that pixel's features, at stride 1."""

    kernel: int = 7
    groups: int = 1
    reduction: int = 4
    domain: ClassVar = {"kernel": (3, 7), "groups": (1, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")
        check_positive(self, "groups", "reduction")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.C % self.groups:  # type: ignore[attr-defined]
            raise OperatorTypeError(f"operator 'involution' needs channels divisible by groups={self.groups}, got {x}")
        return x  # type: ignore[return-value]

    def _reduced(self, x: Image) -> int:
        return max(1, x.C // self.reduction)

    def build(self, x: Image) -> nn.Module:
        return _InvolutionModule(x.C, self.kernel, self.groups, self._reduced(x))

    def params(self, x: Image) -> int:
        r, span = self._reduced(x), self.kernel * self.kernel * self.groups
        return conv_params(x.C, r, 1) + bn_params(r) + conv_params(r, span, 1, bias=True)

    def macs(self, x: Image) -> int:
        r, taps = self._reduced(x), self.kernel * self.kernel
        generate = conv_macs(x.C, r, 1, x.H, x.W) + conv_macs(r, taps * self.groups, 1, x.H, x.W)
        return generate + x.C * taps * x.H * x.W  # the per-pixel weighted sum runs as a batched matmul


class _ModulatedDeformConv(nn.Module):
    """DCNv2: each of the K*K taps sampled at a learned offset (bilinear) and scaled by a learned mask in (0, 1)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        taps = kernel * kernel
        self.offset_mask = nn.Conv2d(cin, 3 * taps, kernel, padding=(kernel - 1) // 2)  # (dy, dx, mask) per tap
        nn.init.zeros_(self.offset_mask.weight)  # start as a plain conv: zero offsets, masks sigmoid(0) = 0.5
        nn.init.zeros_(self.offset_mask.bias)
        self.weight = nn.Parameter(torch.empty(cout, cin * taps))  # columns ordered (channel, tap) like a conv kernel
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        rows, cols = torch.meshgrid(torch.arange(kernel), torch.arange(kernel), indexing="ij")
        self.register_buffer("tap_dy", (rows.reshape(1, taps, 1, 1) - (kernel - 1) // 2).float(), persistent=False)
        self.register_buffer("tap_dx", (cols.reshape(1, taps, 1, 1) - (kernel - 1) // 2).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        taps = self.kernel * self.kernel
        dy, dx, mask = torch.split(self.offset_mask(x), taps, dim=1)  # each (B, K*K, H, W)
        ys = torch.arange(h, dtype=x.dtype, device=x.device).reshape(1, 1, h, 1) + self.tap_dy + dy
        xs = torch.arange(w, dtype=x.dtype, device=x.device).reshape(1, 1, 1, w) + self.tap_dx + dx
        grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], dim=-1)  # pixel -> [-1, 1], centres
        grid = grid.reshape(b, taps * h, w, 2)
        sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.reshape(b, c, taps, h, w) * torch.sigmoid(mask).unsqueeze(1)  # (B, C, K*K, H, W)
        out = torch.matmul(self.weight, sampled.reshape(b, c * taps, h * w))  # (B, cout, HW)
        return out.reshape(b, -1, h, w)


@operator(
    "deform_conv_v2",
    family="dynamic-conv",
    paper="Deformable ConvNets v2: More Deformable, Better Results, arXiv:1811.11168",
)
@dataclass(frozen=True)
class DeformConvV2(Operator):
    """Modulated deformable conv (DCNv2), batch norm and ReLU at stride 1; MACs leave out the bilinear sampling."""

    width: int
    kernel: int = 3
    domain: ClassVar = {"width": (16, 32)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width")
        check_odd(self, "kernel")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return Image(self.width, x.H, x.W)  # type: ignore[attr-defined]

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(_ModulatedDeformConv(x.C, self.width, self.kernel), nn.BatchNorm2d(self.width), nn.ReLU())

    def params(self, x: Image) -> int:
        taps = self.kernel * self.kernel
        offsets = conv_params(x.C, 3 * taps, self.kernel, bias=True)
        return offsets + conv_params(x.C, self.width, self.kernel) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        offsets = conv_macs(x.C, 3 * self.kernel * self.kernel, self.kernel, x.H, x.W)
        return offsets + conv_macs(x.C, self.width, self.kernel, x.H, x.W)
