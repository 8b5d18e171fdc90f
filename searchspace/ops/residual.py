"""Residual blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, linear_params, strided
from archetype.searchspace.operator import Operator, operator
from archetype.searchspace.ops.checks import check_at_least, check_multiple_of, check_positive, check_probability
from archetype.searchspace.ops.layers import conv_bn, drop_path_or_identity
from archetype.searchspace.types import Image, TensorType


def _projection(cin: int, width: int, stride: int) -> nn.Module:
    """The shortcut: identity when the shape is kept, else a strided 1x1 conv-bn."""
    return nn.Identity() if stride == 1 and cin == width else conv_bn(cin, width, 1, stride, act=None)


def _projection_params(x: Image, width: int, stride: int) -> int:
    return 0 if stride == 1 and x.C == width else conv_params(x.C, width, 1) + bn_params(width)


def _projection_macs(x: Image, y: Image, stride: int) -> int:
    return 0 if stride == 1 and x.C == y.C else conv_macs(x.C, y.C, 1, y.H, y.W)


class ResidualModule(nn.Module):
    """relu(drop_path(body(x)) + shortcut(x))."""

    def __init__(self, body: nn.Module, shortcut: nn.Module, drop: float) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.drop_path = drop_path_or_identity(drop)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.body(x)) + self.shortcut(x))


class _StridedBlock(Operator):
    """Checks and output type shared by the blocks that map Image[C,H,W] to Image[width, ceil(H/s), ceil(W/s)]."""

    width: int  # hyperparameters that each subclass declares as dataclass fields
    stride: int
    drop_path: float

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "stride")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)


@operator(
    "basic_block",
    family="residual",
    paper="Deep Residual Learning for Image Recognition (ResNet), arXiv:1512.03385",
)
@dataclass(frozen=True)
class BasicBlock(_StridedBlock):
    """Two 3x3 conv-bn layers plus a shortcut (1x1 projection when the shape changes)."""

    width: int
    stride: int = 1
    drop_path: float = 0.0
    domain: ClassVar = {"width": (16, 32, 64), "stride": (1, 2)}

    def build(self, x: Image) -> nn.Module:
        body = nn.Sequential(
            conv_bn(x.C, self.width, 3, self.stride),  # (B, width, H/s, W/s)
            conv_bn(self.width, self.width, 3, act=None),
        )
        return ResidualModule(body, _projection(x.C, self.width, self.stride), self.drop_path)

    def params(self, x: Image) -> int:
        total = conv_params(x.C, self.width, 3) + conv_params(self.width, self.width, 3) + 2 * bn_params(self.width)
        return total + _projection_params(x, self.width, self.stride)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        total = conv_macs(x.C, self.width, 3, y.H, y.W) + conv_macs(self.width, self.width, 3, y.H, y.W)
        return total + _projection_macs(x, y, self.stride)


@operator(
    "bottleneck",
    family="residual",
    paper="Deep Residual Learning for Image Recognition (ResNet), arXiv:1512.03385",
)
@dataclass(frozen=True)
class Bottleneck(_StridedBlock):
    """The ResNet bottleneck: 1x1 reduce to width/4, strided 3x3, 1x1 expand to width, plus a shortcut."""

    width: int
    stride: int = 1
    drop_path: float = 0.0
    domain: ClassVar = {"width": (16, 32, 64), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_multiple_of(self, "width", 4, "the expansion is 4")

    def build(self, x: Image) -> nn.Module:
        inner = self.width // 4
        body = nn.Sequential(
            conv_bn(x.C, inner, 1),  # (B, width/4, H, W)
            conv_bn(inner, inner, 3, self.stride),  # (B, width/4, H/s, W/s)
            conv_bn(inner, self.width, 1, act=None),  # (B, width, H/s, W/s)
        )
        return ResidualModule(body, _projection(x.C, self.width, self.stride), self.drop_path)

    def params(self, x: Image) -> int:
        inner = self.width // 4
        total = conv_params(x.C, inner, 1) + conv_params(inner, inner, 3) + conv_params(inner, self.width, 1)
        total += 2 * bn_params(inner) + bn_params(self.width)
        return total + _projection_params(x, self.width, self.stride)

    def macs(self, x: Image) -> int:
        inner, y = self.width // 4, self.output_type(x)
        total = conv_macs(x.C, inner, 1, x.H, x.W) + conv_macs(inner, inner, 3, y.H, y.W)
        total += conv_macs(inner, self.width, 1, y.H, y.W)
        return total + _projection_macs(x, y, self.stride)


class _WideBlockModule(nn.Module):
    def __init__(self, cin: int, width: int, stride: int, dropout: float, drop: float) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.mid = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(dropout))
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.project = stride != 1 or cin != width
        self.shortcut = nn.Conv2d(cin, width, 1, stride, bias=False) if self.project else nn.Identity()
        self.drop_path = drop_path_or_identity(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)  # (B, C, H, W), pre-activated
        branch = self.conv2(self.mid(self.conv1(pre)))  # (B, width, H/s, W/s)
        skip = self.shortcut(pre) if self.project else x
        return skip + self.drop_path(branch)


@operator("wide_block", family="residual", paper="Wide Residual Networks, arXiv:1605.07146")
@dataclass(frozen=True)
class WideBlock(_StridedBlock):
    """A pre-activation basic block (BN-ReLU-conv3x3 twice) with dropout between the convolutions."""

    width: int
    stride: int = 1
    dropout: float = 0.0
    drop_path: float = 0.0
    domain: ClassVar = {"width": (16, 32, 64), "stride": (1, 2), "dropout": (0.0, 0.3)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_probability(self, "dropout")

    def build(self, x: Image) -> nn.Module:
        return _WideBlockModule(x.C, self.width, self.stride, self.dropout, self.drop_path)

    def _projects(self, x: Image) -> bool:
        return self.stride != 1 or x.C != self.width

    def params(self, x: Image) -> int:
        total = bn_params(x.C) + conv_params(x.C, self.width, 3) + bn_params(self.width)
        total += conv_params(self.width, self.width, 3)
        return total + (conv_params(x.C, self.width, 1) if self._projects(x) else 0)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        total = conv_macs(x.C, self.width, 3, y.H, y.W) + conv_macs(self.width, self.width, 3, y.H, y.W)
        return total + (conv_macs(x.C, self.width, 1, y.H, y.W) if self._projects(x) else 0)


class _HierarchicalConv(nn.Module):
    """Res2Net's 3x3 stage: split channels into s groups; y1 = x1, y2 = K2(x2), yi = Ki(xi + y(i-1)).

    With a stride the groups cannot be chained: each Ki takes xi alone and x1 is average-pooled.
    """

    def __init__(self, channels: int, scales: int, stride: int) -> None:
        super().__init__()
        self.group = channels // scales
        self.chained = stride == 1
        self.pool = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.convs = nn.ModuleList(conv_bn(self.group, self.group, 3, stride) for _ in range(scales - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, *rest = torch.split(x, self.group, dim=1)  # s x (B, C/s, H, W)
        outs = [self.pool(first)]
        for conv, part in zip(self.convs, rest):
            outs.append(conv(part + outs[-1] if self.chained and len(outs) > 1 else part))
        return torch.cat(outs, dim=1)  # (B, C, H/s, W/s)


@operator(
    "res2net_block",
    family="residual",
    paper="Res2Net: A New Multi-scale Backbone Architecture, arXiv:1904.01169",
)
@dataclass(frozen=True)
class Res2NetBlock(_StridedBlock):
    """A bottleneck whose 3x3 conv is split into `scales` channel groups chained by hierarchical residuals."""

    width: int
    scales: int = 4
    stride: int = 1
    drop_path: float = 0.0
    domain: ClassVar = {"width": (16, 32, 64), "scales": (2, 4), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 2, "scales")
        check_multiple_of(self, "width", 4 * self.scales, "width/4 is split into 'scales' groups")

    def build(self, x: Image) -> nn.Module:
        inner = self.width // 4
        body = nn.Sequential(
            conv_bn(x.C, inner, 1),  # (B, width/4, H, W)
            _HierarchicalConv(inner, self.scales, self.stride),  # (B, width/4, H/s, W/s)
            conv_bn(inner, self.width, 1, act=None),  # (B, width, H/s, W/s)
        )
        return ResidualModule(body, _projection(x.C, self.width, self.stride), self.drop_path)

    def params(self, x: Image) -> int:
        inner = self.width // 4
        group = inner // self.scales
        total = conv_params(x.C, inner, 1) + bn_params(inner) + conv_params(inner, self.width, 1)
        total += (self.scales - 1) * (conv_params(group, group, 3) + bn_params(group)) + bn_params(self.width)
        return total + _projection_params(x, self.width, self.stride)

    def macs(self, x: Image) -> int:
        inner, y = self.width // 4, self.output_type(x)
        group = inner // self.scales
        total = conv_macs(x.C, inner, 1, x.H, x.W) + (self.scales - 1) * conv_macs(group, group, 3, y.H, y.W)
        total += conv_macs(inner, self.width, 1, y.H, y.W)
        return total + _projection_macs(x, y, self.stride)


def _attention_width(channels: int, radix: int) -> int:
    """Hidden width of the split-attention MLP: a quarter of its output, at least 32."""
    return max(channels * radix // 4, 32)


class _SplitAttention(nn.Module):
    """ResNeSt split attention, cardinality 1: a grouped 3x3 conv makes `radix` splits, weighted per channel."""

    def __init__(self, channels: int, radix: int) -> None:
        super().__init__()
        hidden = _attention_width(channels, radix)
        self.channels, self.radix = channels, radix
        self.conv = conv_bn(channels, channels * radix, 3, groups=radix)
        self.fc1 = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.fc2 = nn.Linear(hidden, channels * radix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = self.conv(x).unflatten(1, (self.radix, self.channels))  # (B, R, C, H, W)
        context = splits.sum(1).mean((2, 3))  # (B, C)
        logits = self.fc2(self.fc1(context)).unflatten(1, (self.radix, self.channels))  # (B, R, C)
        weights = logits.softmax(1) if self.radix > 1 else logits.sigmoid()
        return (splits * weights[..., None, None]).sum(1)  # (B, C, H, W)


@operator("resnest_block", family="residual", paper="ResNeSt: Split-Attention Networks, arXiv:2004.08955")
@dataclass(frozen=True)
class ResNeStBlock(_StridedBlock):
    """A bottleneck whose 3x3 is a split-attention conv over `radix` splits (cardinality 1), avg-pooled to stride."""

    width: int
    radix: int = 2
    stride: int = 1
    drop_path: float = 0.0
    domain: ClassVar = {"width": (16, 32, 64), "radix": (2, 4), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "radix")
        check_multiple_of(self, "width", 4 * self.radix, "the grouped 3x3 splits width/4 channels into 'radix' groups")

    def build(self, x: Image) -> nn.Module:
        inner = self.width // 4
        body = nn.Sequential(
            conv_bn(x.C, inner, 1),  # (B, width/4, H, W)
            _SplitAttention(inner, self.radix),  # (B, width/4, H, W)
            nn.AvgPool2d(3, self.stride, 1) if self.stride > 1 else nn.Identity(),  # (B, width/4, H/s, W/s)
            conv_bn(inner, self.width, 1, act=None),  # (B, width, H/s, W/s)
        )
        return ResidualModule(body, _projection(x.C, self.width, self.stride), self.drop_path)

    def params(self, x: Image) -> int:
        inner = self.width // 4
        hidden, split = _attention_width(inner, self.radix), inner * self.radix
        total = conv_params(x.C, inner, 1) + bn_params(inner)
        total += conv_params(inner, split, 3, groups=self.radix) + bn_params(split)
        total += linear_params(inner, hidden) + bn_params(hidden) + linear_params(hidden, split)
        total += conv_params(inner, self.width, 1) + bn_params(self.width)
        return total + _projection_params(x, self.width, self.stride)

    def macs(self, x: Image) -> int:
        inner, y = self.width // 4, self.output_type(x)
        hidden, split = _attention_width(inner, self.radix), inner * self.radix
        total = conv_macs(x.C, inner, 1, x.H, x.W) + conv_macs(inner, split, 3, x.H, x.W, groups=self.radix)
        total += inner * hidden + hidden * split + conv_macs(inner, self.width, 1, y.H, y.W)
        return total + _projection_macs(x, y, self.stride)


class _DenseLayerModule(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.new = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, 4 * growth, 1, bias=False),  # (B, 4k, H, W)
            nn.BatchNorm2d(4 * growth),
            nn.ReLU(),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),  # (B, k, H, W)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.new(x)), dim=1)  # (B, C + k, H, W)


@operator(
    "dense_layer",
    family="residual",
    paper="Densely Connected Convolutional Networks (DenseNet), arXiv:1608.06993",
)
@dataclass(frozen=True)
class DenseLayer(Operator):
    """A DenseNet-BC layer: BN-ReLU-1x1(4k)-BN-ReLU-3x3(k), its k new channels appended to the input."""

    growth: int
    domain: ClassVar = {"growth": (12, 24, 32)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "growth")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return Image(x.C + self.growth, x.H, x.W)

    def build(self, x: Image) -> nn.Module:
        return _DenseLayerModule(x.C, self.growth)

    def params(self, x: Image) -> int:
        k = self.growth
        return bn_params(x.C) + conv_params(x.C, 4 * k, 1) + bn_params(4 * k) + conv_params(4 * k, k, 3)

    def macs(self, x: Image) -> int:
        k = self.growth
        return conv_macs(x.C, 4 * k, 1, x.H, x.W) + conv_macs(4 * k, k, 3, x.H, x.W)
