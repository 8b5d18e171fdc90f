"""Modern large-kernel convolution blocks: ConvNeXt, RepLKNet, ConvMixer, HorNet and MogaNet."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, depthwise_macs, depthwise_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_at_least, check_odd, check_positive, check_probability, require
from archetype.searchspace.ops.layers import (
    ChannelLayerNorm,
    ChannelMlp,
    LayerScale,
    conv_bn,
    depthwise_conv,
    drop_path_or_identity,
    layer_scale_or_identity,
)
from archetype.searchspace.types import Image, TensorType


class _GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's GRN on a channels-last (B, H, W, C) map: x + gamma * (x * N(x)) + beta."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)  # (B, 1, 1, C): spatial L2 norm per channel
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)  # divisive normalisation across channels
        return x + self.gamma * (x * n) + self.beta


class _ConvNeXtModule(nn.Module):
    def __init__(
        self, channels: int, kernel: int, mlp_ratio: int, layer_scale: float, drop_path: float, grn: bool
    ) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.dwconv = depthwise_conv(channels, kernel)
        self.norm = nn.LayerNorm(channels)
        self.mlp = ChannelMlp(channels, hidden, norm=_GlobalResponseNorm(hidden) if grn else None)
        self.scale = layer_scale_or_identity(channels, layer_scale)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.mlp(self.norm(y))  # (B, H, W, C) via (B, H, W, 4C)
        return x + self.drop_path(self.scale(y).permute(0, 3, 1, 2))


@dataclass(frozen=True)
class _ConvNeXtBase(Operator):
    kernel: int = 7
    mlp_ratio: int = 4
    drop_path: float = 0.0
    domain: ClassVar = {"kernel": (3, 5, 7)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x  # type: ignore[return-value]

    def _core_params(self, x: Image) -> int:
        hidden = x.C * self.mlp_ratio
        return depthwise_params(x.C, self.kernel) + 2 * x.C + mlp_params(x.C, hidden)

    def macs(self, x: Image) -> int:
        return depthwise_macs(x.C, self.kernel, x) + 2 * x.C * x.C * self.mlp_ratio * x.H * x.W


@operator("convnext_block", family="large-kernel", paper="A ConvNet for the 2020s (ConvNeXt), arXiv:2201.03545")
@dataclass(frozen=True)
class ConvNeXtBlock(_ConvNeXtBase):
    """ConvNeXt block: depthwise k x k, LayerNorm, inverted MLP with GELU, layer scale, residual."""

    layer_scale: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least(self, 0, "layer_scale")  # 0 turns it off

    def build(self, x: Image) -> nn.Module:
        return _ConvNeXtModule(x.C, self.kernel, self.mlp_ratio, self.layer_scale, self.drop_path, grn=False)

    def params(self, x: Image) -> int:
        return self._core_params(x) + (x.C if self.layer_scale > 0 else 0)


@operator(
    "convnext_v2_block",
    family="large-kernel",
    paper="ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders, arXiv:2301.00808",
)
@dataclass(frozen=True)
class ConvNeXtV2Block(_ConvNeXtBase):
    """ConvNeXt V2 block: the ConvNeXt block with Global Response Normalization in the MLP and no layer scale."""

    def build(self, x: Image) -> nn.Module:
        return _ConvNeXtModule(x.C, self.kernel, self.mlp_ratio, 0.0, self.drop_path, grn=True)

    def params(self, x: Image) -> int:
        return self._core_params(x) + 2 * x.C * self.mlp_ratio


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias of a bias-free conv followed by ``bn`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale  # type: ignore[operator]


class _ReparamLargeKernel(nn.Module):
    """Depthwise large-kernel conv + BN in parallel with a small-kernel one; ``reparameterize`` merges them."""

    def __init__(self, channels: int, kernel: int, small_kernel: int) -> None:
        super().__init__()
        self.large = depthwise_conv(channels, kernel, bias=False)
        self.large_bn = nn.BatchNorm2d(channels)
        self.small = depthwise_conv(channels, small_kernel, bias=False)
        self.small_bn = nn.BatchNorm2d(channels)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.large_bn(self.large(x)) + self.small_bn(self.small(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        weight, bias = _fold_bn(self.large.weight, self.large_bn)
        small_weight, small_bias = _fold_bn(self.small.weight, self.small_bn)
        pad = (self.large.kernel_size[0] - self.small.kernel_size[0]) // 2
        channels, kernel = self.large.in_channels, self.large.kernel_size[0]
        fused = depthwise_conv(channels, kernel, bias=True).to(weight.device, weight.dtype)
        fused.weight.copy_(weight + F.pad(small_weight, (pad, pad, pad, pad)))  # small kernel centred in the large
        fused.bias.copy_(bias + small_bias)  # type: ignore[union-attr]
        self.fused = fused
        del self.large, self.large_bn, self.small, self.small_bn


class _RepLKModule(nn.Module):
    def __init__(self, channels: int, kernel: int, small_kernel: int, drop_path: float) -> None:
        super().__init__()
        self.pre_norm = nn.BatchNorm2d(channels)
        self.pw1 = conv_bn(channels, channels, 1, act="relu")
        self.large_kernel = _ReparamLargeKernel(channels, kernel, small_kernel)
        self.act = nn.ReLU()
        self.pw2 = conv_bn(channels, channels, 1, act=None)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.act(self.large_kernel(self.pw1(self.pre_norm(x))))))

    def reparameterize(self) -> _RepLKModule:
        """Fold the small kernel and both batch norms into one large-kernel conv for deployment.

        The folded module computes what this one computes in eval mode (with the
        running statistics at the time of the call); do it after training.
        """
        self.large_kernel.reparameterize()
        return self


@operator(
    "replk_block",
    family="large-kernel",
    paper="Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs (RepLKNet), arXiv:2203.06717",
)
@dataclass(frozen=True)
class RepLKBlock(Operator):
    """RepLK block: BN, 1x1, large depthwise conv beside a re-parameterisable small one, 1x1, residual."""

    kernel: int = 13
    small_kernel: int = 3
    drop_path: float = 0.0
    domain: ClassVar = {"kernel": (7, 13), "small_kernel": (3, 5)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")
        check_odd(self, "small_kernel")
        require(self, "small_kernel", self.small_kernel < self.kernel, f"smaller than kernel ({self.kernel})")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        return _RepLKModule(x.C, self.kernel, self.small_kernel, self.drop_path)

    def params(self, x: Image) -> int:
        c = x.C
        pointwise = 2 * (conv_params(c, c, 1) + bn_params(c))
        depthwise = depthwise_params(c, self.kernel, bias=False) + depthwise_params(c, self.small_kernel, bias=False)
        return bn_params(c) + pointwise + depthwise + 2 * bn_params(c)

    def macs(self, x: Image) -> int:
        c = x.C
        depthwise = depthwise_macs(c, self.kernel, x) + depthwise_macs(c, self.small_kernel, x)
        return 2 * conv_macs(c, c, 1, x.H, x.W) + depthwise


class _ConvMixerModule(nn.Module):
    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.spatial = nn.Sequential(depthwise_conv(channels, kernel), nn.GELU(), nn.BatchNorm2d(channels))
        self.channel = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU(), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x + self.spatial(x))


@operator("convmixer_block", family="large-kernel", paper="Patches Are All You Need? (ConvMixer), arXiv:2201.09792")
@dataclass(frozen=True)
class ConvMixerBlock(Operator):
    """ConvMixer layer: depthwise conv, GELU, BN with a residual, then pointwise conv, GELU, BN."""

    kernel: int = 9
    domain: ClassVar = {"kernel": (5, 9)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        return _ConvMixerModule(x.C, self.kernel)

    def params(self, x: Image) -> int:
        c = x.C
        return depthwise_params(c, self.kernel) + conv_params(c, c, 1, bias=True) + 2 * bn_params(c)

    def macs(self, x: Image) -> int:
        return depthwise_macs(x.C, self.kernel, x) + conv_macs(x.C, x.C, 1, x.H, x.W)


def _gn_dims(channels: int, order: int) -> list[int]:
    """Channels of each order of gnConv: C / 2^(n-1), ..., C / 2, C."""
    return [channels // 2 ** (order - 1 - i) for i in range(order)]


class _GnConv(nn.Module):
    """Recursive gated convolution of order n: p_{k+1} = pw_k(p_k) * dw_k(q), from p_0 = a 1x1 projection."""

    def __init__(self, channels: int, order: int, kernel: int, scale: float = 1.0 / 3.0) -> None:
        super().__init__()
        self.dims = _gn_dims(channels, order)
        self.proj_in = nn.Conv2d(channels, 2 * channels, 1)  # p_0 (C / 2^(n-1)) and q (sum of dims)
        self.dw = depthwise_conv(sum(self.dims), kernel)
        self.pws = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in itertools.pairwise(self.dims))
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.proj_in(x), [self.dims[0], sum(self.dims)], dim=1)
        gates = torch.split(self.dw(q) * self.scale, self.dims, dim=1)  # one gate per order
        p = p * gates[0]  # (B, C / 2^(n-1), H, W)
        for pw, gate in zip(self.pws, gates[1:], strict=True):
            p = pw(p) * gate  # channels double at each order
        return self.proj_out(p)  # (B, C, H, W)


class _HorNetModule(nn.Module):
    def __init__(
        self, channels: int, order: int, kernel: int, mlp_ratio: int, layer_scale: float, drop_path: float
    ) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.norm1 = ChannelLayerNorm(channels)
        self.gnconv = _GnConv(channels, order, kernel)
        self.scale1 = layer_scale_or_identity(channels, layer_scale, channels_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = ChannelMlp(channels, hidden)
        self.scale2 = layer_scale_or_identity(channels, layer_scale)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.scale1(self.gnconv(self.norm1(x))))
        y = self.scale2(self.mlp(self.norm2(x.permute(0, 2, 3, 1))))  # (B, H, W, C)
        return x + self.drop_path(y.permute(0, 3, 1, 2))


@operator(
    "gnconv_block",
    family="large-kernel",
    paper="HorNet: Efficient High-Order Spatial Interactions with Recursive Gated Convolutions, arXiv:2207.14284",
)
@dataclass(frozen=True)
class GnConvBlock(Operator):
    """HorNet block: LayerNorm and recursive gated convolution (gnConv) of order n, then LayerNorm and MLP."""

    order: int = 3
    kernel: int = 7
    mlp_ratio: int = 4
    layer_scale: float = 1e-6
    drop_path: float = 0.0
    domain: ClassVar = {"order": (2, 3)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "order", "mlp_ratio")
        check_odd(self, "kernel")
        check_probability(self, "drop_path")
        check_at_least(self, 0, "layer_scale")  # 0 turns it off

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.C % 2 ** (self.order - 1):  # type: ignore[attr-defined]
            raise OperatorTypeError(
                f"operator 'gnconv_block' of order {self.order} needs channels divisible by {2 ** (self.order - 1)}, "
                f"got {x}"
            )
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        return _HorNetModule(x.C, self.order, self.kernel, self.mlp_ratio, self.layer_scale, self.drop_path)

    def params(self, x: Image) -> int:
        c, dims, hidden = x.C, _gn_dims(x.C, self.order), x.C * self.mlp_ratio
        gnconv = conv_params(c, 2 * c, 1, bias=True) + depthwise_params(sum(dims), self.kernel)
        gnconv += sum(conv_params(a, b, 1, bias=True) for a, b in itertools.pairwise(dims))
        gnconv += conv_params(c, c, 1, bias=True)
        mlp = mlp_params(c, hidden)
        return 4 * c + gnconv + mlp + (2 * c if self.layer_scale > 0 else 0)

    def macs(self, x: Image) -> int:
        c, dims, hw = x.C, _gn_dims(x.C, self.order), x.H * x.W
        pointwise = 2 * c * c + sum(a * b for a, b in itertools.pairwise(dims)) + c * c
        return hw * (pointwise + 2 * c * c * self.mlp_ratio) + depthwise_macs(sum(dims), self.kernel, x)


def _moga_split(channels: int) -> tuple[int, int, int]:
    """MogaNet's 1:3:4 channel split across the dilation-1, -2 and -3 depthwise convs (each part >= 1)."""
    low = max(1, channels // 8)
    mid = max(1, 3 * channels // 8)
    return low, mid, channels - low - mid


class _MultiOrderDWConv(nn.Module):
    """Depthwise 5x5 on all channels, then dilated 5x5 (d=2) and 7x7 (d=3) convs on 3/8 and 4/8 of them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = _moga_split(channels)
        self.dw0 = depthwise_conv(channels, 5)
        self.dw1 = depthwise_conv(self.split[1], 5, dilation=2)
        self.dw2 = depthwise_conv(self.split[2], 7, dilation=3)
        self.pw = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, mid, high = torch.split(self.dw0(x), self.split, dim=1)
        return self.pw(torch.cat([low, self.dw1(mid), self.dw2(high)], dim=1))


class _MogaSpatial(nn.Module):
    """Multi-order gated aggregation: feature decomposition, then SiLU(gate) * SiLU(multi-order context)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(channels, channels, 1)
        self.sigma = LayerScale(channels, 1e-5, channels_first=True)
        self.gate = nn.Conv2d(channels, channels, 1)
        self.value = _MultiOrderDWConv(channels)
        self.proj2 = nn.Conv2d(channels, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj1(x)
        y = self.act(y + self.sigma(y - y.mean(dim=(2, 3), keepdim=True)))  # emphasise what differs from the mean
        return x + self.proj2(self.act(self.gate(y)) * self.act(self.value(y)))


class _MogaChannel(nn.Module):
    """Channel aggregation MLP: 1x1 up, depthwise 3x3, GELU, channel reallocation against a 1-channel summary."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dw = depthwise_conv(hidden, 3)
        self.act = nn.GELU()
        self.decompose = nn.Conv2d(hidden, 1, 1)
        self.sigma = LayerScale(hidden, 1e-5, channels_first=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.dw(self.fc1(x)))  # (B, hidden, H, W)
        y = y + self.sigma(y - self.act(self.decompose(y)))
        return self.fc2(y)


class _MogaModule(nn.Module):
    def __init__(self, channels: int, mlp_ratio: int, layer_scale: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.spatial = _MogaSpatial(channels)
        self.scale1 = layer_scale_or_identity(channels, layer_scale, channels_first=True)
        self.norm2 = nn.BatchNorm2d(channels)
        self.channel = _MogaChannel(channels, channels * mlp_ratio)
        self.scale2 = layer_scale_or_identity(channels, layer_scale, channels_first=True)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.scale1(self.spatial(self.norm1(x))))
        return x + self.drop_path(self.scale2(self.channel(self.norm2(x))))


@operator(
    "moga_block",
    family="large-kernel",
    paper="Efficient Multi-order Gated Aggregation Network (MogaNet), arXiv:2211.03295",
)
@dataclass(frozen=True)
class MogaBlock(Operator):
    """MogaNet block: multi-order gated aggregation over dilated depthwise convs, then a channel aggregation MLP."""

    mlp_ratio: int = 4
    layer_scale: float = 1e-5
    drop_path: float = 0.0
    domain: ClassVar = {"mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")
        check_at_least(self, 0, "layer_scale")  # 0 turns it off

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.C < 3:  # type: ignore[attr-defined]
            raise OperatorTypeError(f"operator 'moga_block' splits channels three ways and needs at least 3, got {x}")
        return x  # type: ignore[return-value]

    def build(self, x: Image) -> nn.Module:
        return _MogaModule(x.C, self.mlp_ratio, self.layer_scale, self.drop_path)

    def params(self, x: Image) -> int:
        c, hidden = x.C, x.C * self.mlp_ratio
        _, mid, high = _moga_split(c)
        multi_order = depthwise_params(c, 5) + depthwise_params(mid, 5) + depthwise_params(high, 7)
        spatial = 4 * conv_params(c, c, 1, bias=True) + c + multi_order  # four 1x1 convs and sigma
        channel = conv_params(c, hidden, 1, bias=True) + depthwise_params(hidden, 3)
        channel += conv_params(hidden, 1, 1, bias=True) + hidden + conv_params(hidden, c, 1, bias=True)
        return 2 * bn_params(c) + spatial + channel + (2 * c if self.layer_scale > 0 else 0)

    def macs(self, x: Image) -> int:
        c, hidden, hw = x.C, x.C * self.mlp_ratio, x.H * x.W
        _, mid, high = _moga_split(c)
        spatial = 4 * c * c * hw + depthwise_macs(c, 5, x) + depthwise_macs(mid, 5, x) + depthwise_macs(high, 7, x)
        channel = (2 * c * hidden + hidden) * hw + depthwise_macs(hidden, 3, x)
        return spatial + channel
