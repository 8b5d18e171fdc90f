"""Multi-branch blocks: parallel paths over the same input, concatenated along channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_multiple_of, check_odd, check_positive, check_probability
from archetype.searchspace.ops.layers import ConvMlp, LayerScale, conv_bn, depthwise_conv, drop_path_or_identity
from archetype.searchspace.types import Image, TensorType


def _inception_widths(width: int) -> tuple[int, int, int, int, int, int]:
    """Branch outputs 1/4, 1/2, 1/8, 1/8 of width (GoogLeNet's 3a: 64, 128, 32, 32), each 1x1 reduce half its branch."""
    b1, b3, b5 = width // 4, width // 2, width // 8
    bp = width - b1 - b3 - b5
    return b1, b3 // 2, b3, -(-b5 // 2), b5, bp


class _InceptionModule(nn.Module):
    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        b1, r3, b3, r5, b5, bp = _inception_widths(width)
        self.branch1 = conv_bn(cin, b1, 1)
        self.branch3 = nn.Sequential(conv_bn(cin, r3, 1), conv_bn(r3, b3, 3))
        self.branch5 = nn.Sequential(conv_bn(cin, r5, 1), conv_bn(r5, b5, 3), conv_bn(b5, b5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, bp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x))
        return torch.cat(branches, dim=1)  # (B, width, H, W)


@operator(
    "inception_block",
    family="multi-branch",
    paper="Going Deeper with Convolutions (GoogLeNet), arXiv:1409.4842; 5x5 as two 3x3 from "
    "Rethinking the Inception Architecture for Computer Vision, arXiv:1512.00567",
)
@dataclass(frozen=True)
class InceptionBlock(Operator):
    """An Inception module: 1x1, 1x1-3x3, 1x1-3x3-3x3 and maxpool-1x1 branches concatenated to `width` channels."""

    width: int
    domain: ClassVar = {"width": (16, 32, 64)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width")
        check_multiple_of(self, "width", 8, "the branches take 1/4, 1/2, 1/8 and 1/8 of it")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return Image(self.width, x.H, x.W)

    def build(self, x: Image) -> nn.Module:
        return _InceptionModule(x.C, self.width)

    def params(self, x: Image) -> int:
        b1, r3, b3, r5, b5, bp = _inception_widths(self.width)
        total = sum(conv_params(x.C, c, 1) + bn_params(c) for c in (b1, r3, r5, bp))
        total += conv_params(r3, b3, 3) + conv_params(r5, b5, 3) + conv_params(b5, b5, 3)
        return total + 2 * bn_params(b5) + bn_params(b3)

    def macs(self, x: Image) -> int:
        b1, r3, b3, r5, b5, bp = _inception_widths(self.width)
        total = conv_macs(x.C, b1 + r3 + r5 + bp, 1, x.H, x.W)
        total += conv_macs(r3, b3, 3, x.H, x.W) + conv_macs(r5, b5, 3, x.H, x.W) + conv_macs(b5, b5, 3, x.H, x.W)
        return total


class _InceptionDepthwise(nn.Module):
    """Channels split into identity, square k x k, band 1 x K and band K x 1 depthwise branches."""

    def __init__(self, channels: int, square: int, band: int) -> None:
        super().__init__()
        g = channels // 8
        self.sizes = (channels - 3 * g, g, g, g)
        self.square = depthwise_conv(g, square)
        self.band_w = nn.Conv2d(g, g, (1, band), padding=(0, band // 2), groups=g)
        self.band_h = nn.Conv2d(g, g, (band, 1), padding=(band // 2, 0), groups=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ident, sq, bw, bh = torch.split(x, self.sizes, dim=1)
        return torch.cat((ident, self.square(sq), self.band_w(bw), self.band_h(bh)), dim=1)  # (B, C, H, W)


class _InceptionNeXtModule(nn.Module):
    def __init__(self, channels: int, square: int, band: int, mlp_ratio: int, drop: float) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.mixer = _InceptionDepthwise(channels, square, band)
        self.norm = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, hidden)
        self.scale = LayerScale(channels, 1e-6, channels_first=True)
        self.drop_path = drop_path_or_identity(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.scale(self.mlp(self.norm(self.mixer(x)))))


@operator(
    "inceptionnext_block",
    family="multi-branch",
    paper="InceptionNeXt: When Inception Meets ConvNeXt, arXiv:2303.16900",
)
@dataclass(frozen=True)
class InceptionNeXtBlock(Operator):
    """A MetaNeXt block whose token mixer is Inception depthwise conv (identity, square and two band kernels)."""

    square_kernel: int = 3
    band_kernel: int = 11
    mlp_ratio: int = 4
    drop_path: float = 0.0
    domain: ClassVar = {"band_kernel": (11, 7), "mlp_ratio": (4, 3)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "square_kernel", "band_kernel")
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.C < 8:
            raise OperatorTypeError(f"operator '{self.name}' needs at least 8 channels (1/8 per branch), got {x}")
        return x

    def build(self, x: Image) -> nn.Module:
        return _InceptionNeXtModule(x.C, self.square_kernel, self.band_kernel, self.mlp_ratio, self.drop_path)

    def params(self, x: Image) -> int:
        g, hidden = x.C // 8, x.C * self.mlp_ratio
        mixer = g * (self.square_kernel**2 + 2 * self.band_kernel) + 3 * g
        return mixer + bn_params(x.C) + mlp_params(x.C, hidden) + x.C  # x.C: the layer scale

    def macs(self, x: Image) -> int:
        g, hidden = x.C // 8, x.C * self.mlp_ratio
        mixer = g * (self.square_kernel**2 + 2 * self.band_kernel) * x.H * x.W
        return mixer + conv_macs(x.C, hidden, 1, x.H, x.W) + conv_macs(hidden, x.C, 1, x.H, x.W)
