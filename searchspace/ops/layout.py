"""Layout-changing adapters between feature maps and token sequences, and token classifier heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import conv_macs, conv_params, grid_side, linear_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_positive
from archetype.searchspace.ops.layers import grid_to_tokens, tokens_to_grid, trunc_normal_parameter
from archetype.searchspace.types import Image, TensorType, Tokens, Vector


class _PatchEmbed(nn.Module):
    def __init__(self, channels: int, width: int, patch: int, tokens: int, position: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, width, patch, stride=patch)
        self.position = None
        if position:
            self.position = trunc_normal_parameter(1, tokens, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = grid_to_tokens(self.proj(x))  # (B, C, H, W) -> (B, width, H/p, W/p) -> (B, N, width)
        return x if self.position is None else x + self.position


@operator(
    "patchify",
    family="layout",
    paper="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale (ViT), arXiv:2010.11929",
)
@dataclass(frozen=True)
class Patchify(Operator):
    """ViT patch embedding: a p x p stride-p conv flattened to tokens, plus a learned position embedding."""

    patch: int
    width: int
    position: bool = True
    domain: ClassVar = {"patch": (1, 2, 4), "width": (16, 32, 64)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "patch", "width")

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        if x.H % self.patch or x.W % self.patch:
            raise OperatorTypeError(f"operator '{self.name}' cannot cut {x} into {self.patch}x{self.patch} patches")
        return Tokens((x.H // self.patch) * (x.W // self.patch), self.width)

    def build(self, x: Image) -> nn.Module:
        return _PatchEmbed(x.C, self.width, self.patch, self.output_type(x).N, self.position)

    def params(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_params(x.C, self.width, self.patch, bias=True) + (y.N * y.C if self.position else 0)

    def macs(self, x: Image) -> int:
        self.output_type(x)
        return conv_macs(x.C, self.width, self.patch, x.H // self.patch, x.W // self.patch)


class _TokensToMap(nn.Module):
    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tokens_to_grid(x, self.side)  # (B, N, C) -> (B, C, h, h)


@operator(
    "unpatchify",
    family="layout",
    paper="Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions "
    "(tokens reshaped to a map), arXiv:2102.12122",
)
@dataclass(frozen=True)
class Unpatchify(Operator):
    """Lays a square token grid back out as a feature map: Tokens[h*h, C] -> Image[C, h, h], a pure reshape."""

    weighted: ClassVar[bool] = False
    accepts: ClassVar = (Tokens,)

    def output_type(self, x: TensorType) -> Image:
        side = grid_side(self, x)
        return Image(x.C, side, side)

    def build(self, x: Tokens) -> nn.Module:
        return _TokensToMap(self.output_type(x).H)

    def params(self, x: Tokens) -> int:
        return 0

    def macs(self, x: Tokens) -> int:
        return 0


class _MapToTokens(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_to_tokens(x)  # (B, C, H, W) -> (B, H*W, C)


@operator(
    "image_to_tokens",
    family="layout",
    paper="An Image is Worth More Than 16x16 Patches: Exploring Transformers on Individual Pixels, arXiv:2406.09415",
)
@dataclass(frozen=True)
class ImageToTokens(Operator):
    """Every pixel of a feature map becomes a token: Image[C, H, W] -> Tokens[H*W, C], a pure reshape."""

    weighted: ClassVar[bool] = False

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        return Tokens(x.H * x.W, x.C)

    def build(self, x: Image) -> nn.Module:
        return _MapToTokens()

    def params(self, x: Image) -> int:
        return 0

    def macs(self, x: Image) -> int:
        return 0


class _TokenPoolLinear(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).mean(dim=1))  # (B, N, C) -> (B, C) -> (B, classes)


@operator(
    "token_head",
    family="layout",
    paper="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale (ViT, global average "
    "pooling head), arXiv:2010.11929",
)
@dataclass(frozen=True)
class TokenHead(Operator):
    """LayerNorm, the mean over tokens, then a linear layer to class logits."""

    classes: int
    accepts: ClassVar = (Tokens,)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "classes")

    def output_type(self, x: TensorType) -> Vector:
        self.check_input(x)
        return Vector(self.classes)

    def build(self, x: Tokens) -> nn.Module:
        return _TokenPoolLinear(x.C, self.classes)

    def params(self, x: Tokens) -> int:
        return 2 * x.C + linear_params(x.C, self.classes)

    def macs(self, x: Tokens) -> int:
        return x.C * self.classes
