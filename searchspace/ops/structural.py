"""Structural operators that shape a network without computing features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.types import Image, TensorType, Tokens, Vector


@operator(
    "identity",
    family="structural",
    paper="Neural Architecture Search with Reinforcement Learning (skip choice for depth), arXiv:1611.01578",
)
@dataclass(frozen=True)
class Identity(Operator):
    """Passes its input through: lets a space search depth by skipping a slot."""

    weighted: ClassVar[bool] = False

    accepts = (Image, Tokens, Vector)

    def output_type(self, x: TensorType) -> TensorType:
        self.check_input(x)
        return x

    def build(self, x: TensorType) -> nn.Module:
        return nn.Identity()

    def params(self, x: TensorType) -> int:
        return 0

    def macs(self, x: TensorType) -> int:
        return 0
