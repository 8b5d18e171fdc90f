"""Classifier heads: from a feature map to class logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from archetype.searchspace.cost import linear_params
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.checks import check_positive
from archetype.searchspace.types import Image, TensorType, Vector


class _PoolLinear(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))  # (B, C, H, W) -> (B, C) -> (B, classes)


@operator(
    "classifier_head",
    family="head",
    paper="Network In Network (global average pooling), arXiv:1312.4400",
)
@dataclass(frozen=True)
class ClassifierHead(Operator):
    """Global average pooling then a linear layer to class logits."""

    classes: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "classes")

    def output_type(self, x: TensorType) -> Vector:
        self.check_input(x)
        return Vector(self.classes)

    def build(self, x: Image) -> nn.Module:
        return _PoolLinear(x.C, self.classes)

    def params(self, x: Image) -> int:
        return linear_params(x.C, self.classes)

    def macs(self, x: Image) -> int:
        return x.C * self.classes
