"""Pooling downsamplers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from archetype.searchspace.cost import strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.checks import check_choice
from archetype.searchspace.types import Image, TensorType


@operator(
    "pool",
    family="pooling",
    paper="Gradient-Based Learning Applied to Document Recognition (LeNet), doi:10.1109/5.726791",
)
@dataclass(frozen=True)
class Pool(Operator):
    """A 3x3 max or average pool with stride 2: halves H and W (rounding up), keeps channels."""

    weighted: ClassVar[bool] = False

    kind: str = "max"
    domain: ClassVar = {"kind": ("max", "avg")}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "kind", ("max", "avg"))

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, 2, self.name)
        return Image(x.C, h, w)

    def build(self, x: Image) -> nn.Module:
        if self.kind == "max":
            return nn.MaxPool2d(3, 2, padding=1)
        return nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)

    def params(self, x: Image) -> int:
        return 0

    def macs(self, x: Image) -> int:
        return 0
