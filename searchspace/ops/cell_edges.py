"""Cell edge operators (NAS-Bench-201, DARTS) and the fixed pieces of the NAS-Bench-201 skeleton."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.checks import check_choice, check_positive
from archetype.searchspace.ops.layers import ACTIVATIONS
from archetype.searchspace.types import Image, TensorType

_NB201 = "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search, arXiv:2001.00326"
_DARTS = "DARTS: Differentiable Architecture Search, arXiv:1806.09055"


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)  # keeps the graph, so the cell's input still gets a (zero) gradient


@operator("zero", family="cell", paper=_NB201)
@dataclass(frozen=True)
class Zero(Operator):
    """An absent edge: outputs zeros of its input's type, so a node summing it is unchanged."""

    weighted: ClassVar[bool] = False

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        return _Zero()

    def params(self, x: Image) -> int:
        return 0

    def macs(self, x: Image) -> int:
        return 0


class _ShapePreserving(Operator):
    """An edge operator that maps ``Image[C,H,W]`` to itself."""

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x  # type: ignore[return-value]


@dataclass(frozen=True)
class _ReluConvBn(_ShapePreserving):
    kernel: ClassVar[int]

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(
            nn.ReLU(), nn.Conv2d(x.C, x.C, self.kernel, 1, self.kernel // 2, bias=False), nn.BatchNorm2d(x.C)
        )

    def params(self, x: Image) -> int:
        return conv_params(x.C, x.C, self.kernel) + bn_params(x.C)

    def macs(self, x: Image) -> int:
        return conv_macs(x.C, x.C, self.kernel, x.H, x.W)


@operator("relu_conv_bn_1x1", family="cell", paper=_NB201)
@dataclass(frozen=True)
class ReluConvBn1x1(_ReluConvBn):
    """ReLU, 1x1 convolution and batch norm at constant width: NB201's ``nor_conv_1x1`` edge."""

    kernel: ClassVar[int] = 1


@operator("relu_conv_bn_3x3", family="cell", paper=_NB201)
@dataclass(frozen=True)
class ReluConvBn3x3(_ReluConvBn):
    """ReLU, 3x3 convolution and batch norm at constant width: NB201's ``nor_conv_3x3`` edge."""

    kernel: ClassVar[int] = 3


@dataclass(frozen=True)
class _Pool3x3(_ShapePreserving):
    weighted: ClassVar[bool] = False
    kind: ClassVar[str]

    def build(self, x: Image) -> nn.Module:
        if self.kind == "max":
            return nn.MaxPool2d(3, 1, padding=1)
        return nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)

    def params(self, x: Image) -> int:
        return 0

    def macs(self, x: Image) -> int:
        return 0


@operator("avg_pool_3x3", family="cell", paper=_NB201)
@dataclass(frozen=True)
class AvgPool3x3(_Pool3x3):
    """A 3x3 average pool at stride 1 (padding not counted): NB201's and DARTS' ``avg_pool_3x3`` edge."""

    kind: ClassVar[str] = "avg"


@operator("max_pool_3x3", family="cell", paper=_DARTS)
@dataclass(frozen=True)
class MaxPool3x3(_Pool3x3):
    """A 3x3 max pool at stride 1: DARTS' ``max_pool_3x3`` edge."""

    kind: ClassVar[str] = "max"


def _relu_dw_pw_bn(channels: int, kernel: int, dilation: int) -> list[nn.Module]:
    pad = dilation * (kernel - 1) // 2
    return [
        nn.ReLU(),
        nn.Conv2d(channels, channels, kernel, 1, pad, dilation=dilation, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
    ]


def _dw_pw_bn_params(channels: int, kernel: int) -> int:
    return conv_params(channels, channels, kernel, groups=channels) + conv_params(channels, channels, 1) + bn_params(
        channels
    )


def _dw_pw_macs(x: Image, kernel: int) -> int:
    return conv_macs(x.C, x.C, kernel, x.H, x.W, groups=x.C) + conv_macs(x.C, x.C, 1, x.H, x.W)


@dataclass(frozen=True)
class _SepConv(_ShapePreserving):
    kernel: ClassVar[int]

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(*_relu_dw_pw_bn(x.C, self.kernel, 1), *_relu_dw_pw_bn(x.C, self.kernel, 1))

    def params(self, x: Image) -> int:
        return 2 * _dw_pw_bn_params(x.C, self.kernel)

    def macs(self, x: Image) -> int:
        return 2 * _dw_pw_macs(x, self.kernel)


@operator("sep_conv_3x3", family="cell", paper=_DARTS)
@dataclass(frozen=True)
class SepConv3x3(_SepConv):
    """Two ReLU, depthwise-separable 3x3 convolution, batch norm units: DARTS' ``sep_conv_3x3`` edge."""

    kernel: ClassVar[int] = 3


@operator("sep_conv_5x5", family="cell", paper=_DARTS)
@dataclass(frozen=True)
class SepConv5x5(_SepConv):
    """Two ReLU, depthwise-separable 5x5 convolution, batch norm units: DARTS' ``sep_conv_5x5`` edge."""

    kernel: ClassVar[int] = 5


@dataclass(frozen=True)
class _DilConv(_ShapePreserving):
    kernel: ClassVar[int]

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(*_relu_dw_pw_bn(x.C, self.kernel, 2))

    def params(self, x: Image) -> int:
        return _dw_pw_bn_params(x.C, self.kernel)

    def macs(self, x: Image) -> int:
        return _dw_pw_macs(x, self.kernel)


@operator("dil_conv_3x3", family="cell", paper=_DARTS)
@dataclass(frozen=True)
class DilConv3x3(_DilConv):
    """ReLU, depthwise 3x3 convolution dilated by 2, pointwise convolution, batch norm: DARTS' ``dil_conv_3x3``."""

    kernel: ClassVar[int] = 3


@operator("dil_conv_5x5", family="cell", paper=_DARTS)
@dataclass(frozen=True)
class DilConv5x5(_DilConv):
    """ReLU, depthwise 5x5 convolution dilated by 2, pointwise convolution, batch norm: DARTS' ``dil_conv_5x5``."""

    kernel: ClassVar[int] = 5


class _ResidualReduction(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)  # (B, cout, ceil(H/2), ceil(W/2))


@operator("residual_reduction", family="residual", paper=_NB201)
@dataclass(frozen=True)
class ResidualReduction(Operator):
    """Two ReLU-conv-BN units (the first at stride 2) plus an average-pooled 1x1 shortcut: NB201's reduction block."""

    width: int
    domain: ClassVar = {"width": (32, 64)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, 2, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return _ResidualReduction(x.C, self.width)

    def params(self, x: Image) -> int:
        w = self.width
        return conv_params(x.C, w, 3) + conv_params(w, w, 3) + 2 * bn_params(w) + conv_params(x.C, w, 1)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return sum(conv_macs(cin, self.width, k, y.H, y.W) for cin, k in ((x.C, 3), (self.width, 3), (x.C, 1)))


@operator("bn_act", family="cell", paper=_NB201)
@dataclass(frozen=True)
class BnAct(Operator):
    """Batch norm then an activation at constant shape: the pre-activation network's last normalisation."""

    act: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(nn.BatchNorm2d(x.C), ACTIVATIONS[self.act]())

    def params(self, x: Image) -> int:
        return bn_params(x.C)

    def macs(self, x: Image) -> int:
        return 0
