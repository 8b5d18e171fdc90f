"""Plain convolutions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from archetype.errors import SpecError
from archetype.searchspace.cost import bn_params, conv_macs, conv_params, strided
from archetype.searchspace.operator import Operator, operator
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
        if self.act not in ACTIVATIONS:
            raise SpecError(f"operator 'conv_bn_act': act must be one of {sorted(ACTIVATIONS)}, got {self.act!r}")
        if self.kernel % 2 == 0 or self.kernel < 1 or self.width < 1 or self.stride < 1:
            raise SpecError(f"operator 'conv_bn_act': needs an odd kernel and positive width and stride, got {self}")

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
