"""MLP mixers: token and channel mixing with fully connected layers (MLP-Mixer, ResMLP, RepMLP, gMLP)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, linear_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_odd, check_positive, check_probability, require
from archetype.searchspace.ops.layers import ChannelMlp, conv_bn, drop_path_or_identity
from archetype.searchspace.types import Image, TensorType, Tokens


class _MixerModule(nn.Module):
    def __init__(self, n: int, c: int, token_hidden: int, channel_hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.token_mlp = ChannelMlp(n, token_hidden)
        self.norm2 = nn.LayerNorm(c)
        self.channel_mlp = ChannelMlp(c, channel_hidden)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        x = x + self.drop_path(self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2))  # mixes along N
        return x + self.drop_path(self.channel_mlp(self.norm2(x)))


@operator("mixer_block", family="mlp", paper="MLP-Mixer: An all-MLP Architecture for Vision, arXiv:2105.01601")
@dataclass(frozen=True)
class MixerBlock(Operator):
    """MLP-Mixer layer: a token-mixing MLP across N then a channel-mixing MLP, each pre-norm and residual."""

    token_hidden: int
    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts = (Tokens,)
    domain: ClassVar = {"token_hidden": (32, 64), "mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "token_hidden", "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        return x

    def build(self, x: Tokens) -> nn.Module:
        return _MixerModule(x.N, x.C, self.token_hidden, self.mlp_ratio * x.C, self.drop_path)

    def params(self, x: Tokens) -> int:
        return 4 * x.C + mlp_params(x.N, self.token_hidden) + mlp_params(x.C, self.mlp_ratio * x.C)

    def macs(self, x: Tokens) -> int:
        return 2 * x.C * x.N * self.token_hidden + 2 * x.N * x.C * self.mlp_ratio * x.C


class _Affine(nn.Module):
    """Per-channel scale and shift: ResMLP's replacement for LayerNorm, and its LayerScale."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), float(scale)))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x + self.beta


class _ResMlpModule(nn.Module):
    def __init__(self, n: int, c: int, hidden: int, layerscale: float, drop_path: float) -> None:
        super().__init__()
        self.pre1, self.post1 = _Affine(c), _Affine(c, layerscale)
        self.token_linear = nn.Linear(n, n)
        self.pre2, self.post2 = _Affine(c), _Affine(c, layerscale)
        self.mlp = ChannelMlp(c, hidden)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        x = x + self.drop_path(self.post1(self.token_linear(self.pre1(x).transpose(1, 2)).transpose(1, 2)))
        return x + self.drop_path(self.post2(self.mlp(self.pre2(x))))


@operator(
    "resmlp_block",
    family="mlp",
    paper="ResMLP: Feedforward networks for image classification with data-efficient training, arXiv:2105.03404",
)
@dataclass(frozen=True)
class ResMlpBlock(Operator):
    """ResMLP layer: affine, linear across tokens, LayerScale, residual; affine, channel MLP, LayerScale, residual."""

    mlp_ratio: int = 4
    layerscale: float = 0.1
    drop_path: float = 0.0
    accepts = (Tokens,)
    domain: ClassVar = {"mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")
        require(self, "layerscale", self.layerscale > 0, "> 0")

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        return x

    def build(self, x: Tokens) -> nn.Module:
        return _ResMlpModule(x.N, x.C, self.mlp_ratio * x.C, self.layerscale, self.drop_path)

    def params(self, x: Tokens) -> int:
        return 8 * x.C + linear_params(x.N, x.N) + mlp_params(x.C, self.mlp_ratio * x.C)  # 4 affines: 8C

    def macs(self, x: Tokens) -> int:
        return x.N * x.N * x.C + 2 * x.N * x.C * self.mlp_ratio * x.C


_GP_REDUCTION = 4
"""RepMLP's global perceptron squeezes its C * (H/p) * (W/p) inputs by this factor."""


class _PartitionPerceptron(nn.Module):
    """RepMLP's grouped FC over each flattened C x p x p partition, plus parallel conv-bn branches (the local prior)."""

    def __init__(self, c: int, p: int, groups: int, max_kernel: int) -> None:
        super().__init__()
        self.c, self.p = c, p
        dim = c * p * p
        self.fc = nn.Conv2d(dim, dim, 1, groups=groups, bias=False)  # a grouped FC on (M, C*p*p, 1, 1)
        self.fc_norm = nn.BatchNorm2d(c)
        self.local = nn.ModuleList(conv_bn(c, c, k, groups=groups, act=None) for k in range(1, max_kernel + 1, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (M, C, p, p) -> (M, C, p, p)
        y = self.fc_norm(self.fc(z.reshape(-1, self.c * self.p * self.p, 1, 1)).reshape(-1, self.c, self.p, self.p))
        for branch in self.local:
            y = y + branch(z)
        return y

    @torch.no_grad()
    def fused(self) -> _FusedPartitionPerceptron:
        """One grouped FC with bias equal to this module in eval mode, found by feeding it the identity."""
        dim, groups = self.c * self.p * self.p, self.fc.groups
        twin = copy.deepcopy(self).double().eval()
        basis = torch.cat([torch.zeros(1, dim), torch.eye(dim)]).double().reshape(dim + 1, self.c, self.p, self.p)
        out = twin(basis).reshape(dim + 1, dim)
        bias, dense = out[0], (out[1:] - out[0]).T  # dense[o, i]: the map is affine, block-diagonal by group
        size = dim // groups
        blocks = [dense[g * size:(g + 1) * size, g * size:(g + 1) * size] for g in range(groups)]
        fc = nn.Conv2d(dim, dim, 1, groups=groups, bias=True).to(self.fc.weight)
        fc.weight.copy_(torch.cat(blocks).reshape(dim, size, 1, 1))
        fc.bias.copy_(bias)
        return _FusedPartitionPerceptron(self.c, self.p, fc)


class _FusedPartitionPerceptron(nn.Module):
    def __init__(self, c: int, p: int, fc: nn.Conv2d) -> None:
        super().__init__()
        self.c, self.p, self.fc = c, p, fc

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (M, C, p, p) -> (M, C, p, p)
        return self.fc(z.reshape(-1, self.c * self.p * self.p, 1, 1)).reshape(-1, self.c, self.p, self.p)

    def fused(self) -> _FusedPartitionPerceptron:
        return self


class _RepMlpModule(nn.Module):
    def __init__(self, x: Image, p: int, groups: int, max_kernel: int, drop_path: float) -> None:
        super().__init__()
        self.c, self.p, self.hp, self.wp = x.C, p, x.H // p, x.W // p
        cells = x.C * self.hp * self.wp
        hidden = max(1, cells // _GP_REDUCTION)
        self.pool = nn.AvgPool2d(p)
        self.gp_norm = nn.BatchNorm2d(x.C)
        self.gp = ChannelMlp(cells, hidden, act=nn.ReLU)
        self.partition = _PartitionPerceptron(x.C, p, groups, max_kernel)
        self.drop_path = drop_path_or_identity(drop_path)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        c, p, hp, wp = self.c, self.p, self.hp, self.wp
        g = self.gp(self.gp_norm(self.pool(x)).flatten(1))  # (B, C*hp*wp): one value per channel and partition
        g = g.reshape(-1, c, hp, wp).permute(0, 2, 3, 1).reshape(-1, c, 1, 1)  # (B*hp*wp, C, 1, 1)
        z = x.reshape(-1, c, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)  # (B*hp*wp, C, p, p)
        y = self.partition(z + g)
        y = y.reshape(-1, hp, wp, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(-1, c, hp * p, wp * p)
        return self.act(x + self.drop_path(y))

    def reparameterize(self) -> None:
        """Fold the conv-bn branches and the FC's batch norm into the FC (exact in eval mode; for deployment)."""
        self.partition = self.partition.fused()


@operator(
    "repmlp_block",
    family="mlp",
    paper="RepMLP: Re-parameterizing Convolutions into Fully-connected Layers for Image Recognition, arXiv:2105.01883",
)
@dataclass(frozen=True)
class RepMlpBlock(Operator):
    """RepMLP unit (global perceptron, grouped FC over p x p partitions, conv branches to fold in), residual, ReLU.

    ``build(x).reparameterize()`` folds the conv branches into the FC for deployment; params and macs
    describe the training-time form that ``build`` returns.
    """

    partition: int
    groups: int = 4
    max_kernel: int = 3
    drop_path: float = 0.0
    accepts = (Image,)
    domain: ClassVar = {"partition": (4, 8), "groups": (4, 8)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "partition", "groups")
        check_odd(self, "max_kernel")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.H % self.partition or x.W % self.partition:
            raise OperatorTypeError(
                f"operator '{self.name}' cannot split {x} into {self.partition}x{self.partition} partitions"
            )
        if x.C % self.groups:
            raise OperatorTypeError(f"operator '{self.name}': {x} has channels not divisible by groups={self.groups}")
        return x

    def build(self, x: Image) -> nn.Module:
        self.output_type(x)
        return _RepMlpModule(x, self.partition, self.groups, self.max_kernel, self.drop_path)

    def _kernels(self) -> range:
        return range(1, self.max_kernel + 1, 2)

    def _cells(self, x: Image) -> tuple[int, int]:
        cells = x.C * (x.H // self.partition) * (x.W // self.partition)
        return cells, max(1, cells // _GP_REDUCTION)

    def params(self, x: Image) -> int:
        cells, hidden = self._cells(x)
        dim = x.C * self.partition * self.partition
        total = bn_params(x.C) + mlp_params(cells, hidden)
        total += dim * dim // self.groups + bn_params(x.C)
        return total + sum(conv_params(x.C, x.C, k, self.groups) + bn_params(x.C) for k in self._kernels())

    def macs(self, x: Image) -> int:
        cells, hidden = self._cells(x)
        dim = x.C * self.partition * self.partition
        total = 2 * cells * hidden + (x.H // self.partition) * (x.W // self.partition) * dim * dim // self.groups
        return total + sum(conv_macs(x.C, x.C, k, x.H, x.W, self.groups) for k in self._kernels())


class _SpatialGatingUnit(nn.Module):
    """Split channels; normalise one half, mix it across tokens (near-identity gate at init) and gate the other."""

    def __init__(self, n: int, half: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(half)
        self.spatial = nn.Linear(n, n)
        nn.init.uniform_(self.spatial.weight, -1e-3, 1e-3)
        nn.init.ones_(self.spatial.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, N, 2h) -> (B, N, h)
        u, v = z.chunk(2, dim=-1)
        v = self.spatial(self.norm(v).transpose(1, 2)).transpose(1, 2)  # mixes along N
        return u * v


class _GmlpModule(nn.Module):
    def __init__(self, n: int, c: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.up = nn.Linear(c, hidden)
        self.act = nn.GELU()
        self.gate = _SpatialGatingUnit(n, hidden // 2)
        self.down = nn.Linear(hidden // 2, c)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        return x + self.drop_path(self.down(self.gate(self.act(self.up(self.norm(x))))))


@operator("gmlp_block", family="mlp", paper="Pay Attention to MLPs (gMLP), arXiv:2105.08050")
@dataclass(frozen=True)
class GmlpBlock(Operator):
    """gMLP block: norm, channel projection up with GELU, spatial gating unit, projection down, residual."""

    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts = (Tokens,)
    domain: ClassVar = {"mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        if self.mlp_ratio * x.C % 2:
            raise OperatorTypeError(
                f"operator '{self.name}' splits mlp_ratio*C channels in halves; {self.mlp_ratio}*C is odd for {x}"
            )
        return x

    def build(self, x: Tokens) -> nn.Module:
        self.output_type(x)
        return _GmlpModule(x.N, x.C, self.mlp_ratio * x.C, self.drop_path)

    def params(self, x: Tokens) -> int:
        hidden = self.mlp_ratio * x.C
        half = hidden // 2
        norms = bn_params(x.C) + bn_params(half)
        return norms + linear_params(x.C, hidden) + linear_params(x.N, x.N) + linear_params(half, x.C)

    def macs(self, x: Tokens) -> int:
        hidden = self.mlp_ratio * x.C
        half = hidden // 2
        return x.N * x.C * hidden + half * x.N * x.N + x.N * half * x.C
