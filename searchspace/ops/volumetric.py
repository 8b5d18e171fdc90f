"""Volumetric (3-D) operators: convolutions over clips or scans, and the adapter that folds depth into channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, same_padding
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_choice, check_odd, check_positive
from archetype.searchspace.ops.layers import ACTIVATIONS
from archetype.searchspace.types import Image, TensorType, Volume


@operator(
    "conv3d_bn_act",
    family="volumetric",
    paper="Learning Spatiotemporal Features with 3D Convolutional Networks (C3D), arXiv:1412.0767",
)
@dataclass(frozen=True)
class Conv3dBnAct(Operator):
    """A k x k x k convolution, batch norm and activation over a volume, strided in depth, height and width."""

    width: int
    kernel: int = 3
    stride: int = 1
    act: str = "relu"
    accepts: ClassVar = (Volume,)
    domain: ClassVar = {"width": (8, 16, 32), "kernel": (1, 3), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "stride")
        check_odd(self, "kernel")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Volume:
        self.check_input(x)
        if self.stride > 1 and min(x.D, x.H, x.W) < self.stride:  # type: ignore[attr-defined]
            raise OperatorTypeError(f"operator '{self.name}' cannot downsample {x} by {self.stride}")
        d, h, w = (-(-size // self.stride) for size in (x.D, x.H, x.W))  # type: ignore[attr-defined]
        return Volume(self.width, d, h, w)

    def build(self, x: Volume) -> nn.Module:
        return nn.Sequential(
            nn.Conv3d(x.C, self.width, self.kernel, self.stride, same_padding(self.kernel), bias=False),
            nn.BatchNorm3d(self.width),
            ACTIVATIONS[self.act](),
        )

    def params(self, x: Volume) -> int:
        return self.width * x.C * self.kernel**3 + bn_params(self.width)

    def macs(self, x: Volume) -> int:
        y = self.output_type(x)
        return x.C * self.width * self.kernel**3 * y.D * y.H * y.W


class _FoldDepth(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)  # (B, C, D, H, W) -> (B, C*D, H, W)


@operator(
    "fold_depth",
    family="volumetric",
    paper="Large-scale Video Classification with Convolutional Neural Networks (early fusion: frames stacked "
    "along channels), CVPR 2014",
)
@dataclass(frozen=True)
class FoldDepth(Operator):
    """Stacks the D slices of a volume along channels, so 2-D operators take over: a pure reshape."""

    weighted: ClassVar[bool] = False

    accepts: ClassVar = (Volume,)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return Image(x.C * x.D, x.H, x.W)  # type: ignore[attr-defined]

    def build(self, x: Volume) -> nn.Module:
        return _FoldDepth()

    def params(self, x: Volume) -> int:
        return 0

    def macs(self, x: Volume) -> int:
        return 0
