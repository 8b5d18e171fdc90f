"""Plain convolutions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.checks import check_choice, check_odd, check_positive
from archetype.searchspace.ops.layers import ACTIVATIONS, conv_bn
from archetype.searchspace.types import Image, TensorType


@operator(
    "conv_bn_act",
    family="conv",
    paper="Very Deep Convolutional Networks for Large-Scale Image Recognition (VGG), arXiv:1409.1556",
)
@dataclass(frozen=True)
class ConvBnAct(Operator):
    """Convolution, batch norm and activation: the VGG unit, with a stride for downsampling."""

    width: int
    kernel: int = 3
    stride: int = 1
    act: str = "relu"
    domain: ClassVar = {"width": (16, 32, 64), "kernel": (1, 3, 5), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "stride")
        check_odd(self, "kernel")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return conv_bn(x.C, self.width, self.kernel, self.stride, act=self.act)

    def params(self, x: Image) -> int:
        return conv_params(x.C, self.width, self.kernel) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(x.C, self.width, self.kernel, y.H, y.W)


@operator("pointwise_conv", family="conv", paper="Network In Network, arXiv:1312.4400")
@dataclass(frozen=True)
class PointwiseConv(Operator):
    """A 1x1 convolution, batch norm and activation: mixes and re-sizes channels at every pixel."""

    width: int
    act: str = "relu"
    domain: ClassVar = {"width": (16, 32, 64)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return Image(self.width, x.H, x.W)

    def build(self, x: Image) -> nn.Module:
        return conv_bn(x.C, self.width, 1, act=self.act)

    def params(self, x: Image) -> int:
        return conv_params(x.C, self.width, 1) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        return conv_macs(x.C, self.width, 1, x.H, x.W)


@operator(
    "strided_conv",
    family="conv",
    paper="Striving for Simplicity: The All Convolutional Net, arXiv:1412.6806",
)
@dataclass(frozen=True)
class StridedConv(Operator):
    """A 3x3 stride-2 convolution, batch norm and activation in place of a pooling layer."""

    width: int
    act: str = "relu"
    domain: ClassVar = {"width": (16, 32, 64)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, 2, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return conv_bn(x.C, self.width, 3, 2, act=self.act)  # (B, width, ceil(H/2), ceil(W/2))

    def params(self, x: Image) -> int:
        return conv_params(x.C, self.width, 3) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(x.C, self.width, 3, y.H, y.W)


@operator(
    "dilated_conv",
    family="conv",
    paper="Multi-Scale Context Aggregation by Dilated Convolutions, arXiv:1511.07122; as a type-equivalent "
    "of conv_bn_act: NeuralArTS: Structuring Neural Architecture Search with Type Theory, arXiv:2110.08710",
)
@dataclass(frozen=True)
class DilatedConv(Operator):
    """A dilated convolution, batch norm and activation padded by d(k-1)/2: the same shape map as conv_bn_act."""

    width: int
    dilation: int = 2
    kernel: int = 3
    stride: int = 1
    act: str = "relu"
    domain: ClassVar = {"width": (16, 32, 64), "dilation": (2, 3)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "dilation", "stride")
        check_odd(self, "kernel")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return conv_bn(x.C, self.width, self.kernel, self.stride, act=self.act, dilation=self.dilation)

    def params(self, x: Image) -> int:
        return conv_params(x.C, self.width, self.kernel) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(x.C, self.width, self.kernel, y.H, y.W)


class _SpaceToDepth(nn.Module):
    """(B, C, H, W) -> (B, 4C, ceil(H/2), ceil(W/2)); an odd side is first zero-padded at its end."""

    def __init__(self, pad_h: int, pad_w: int) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, pad_w, 0, pad_h)) if pad_h or pad_w else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)  # (B, C, 2h, 2w)
        return torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)


@operator(
    "spd_conv",
    family="conv",
    paper="No More Strided Convolutions or Pooling: A New CNN Building Block for Low-Resolution Images and "
    "Small Objects (SPD-Conv), arXiv:2208.03641",
)
@dataclass(frozen=True)
class SpdConv(Operator):
    """Space-to-depth by 2 then a non-strided 3x3 conv-bn-act: downsamples without discarding pixels."""

    width: int
    act: str = "relu"
    domain: ClassVar = {"width": (16, 32, 64)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, 2, self.name)  # an odd side is zero-padded: ceil(H/2), as strided_conv and pool
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(
            _SpaceToDepth(x.H % 2, x.W % 2),  # (B, 4C, ceil(H/2), ceil(W/2))
            conv_bn(4 * x.C, self.width, 3, act=self.act),
        )

    def params(self, x: Image) -> int:
        return conv_params(4 * x.C, self.width, 3) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(4 * x.C, self.width, 3, y.H, y.W)
