"""Attention mixers and transformer blocks: global, local, pooled, linear, channel and positional attention."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from archetype.searchspace.cost import bn_params, conv_out, depthwise_params, grid_side, linear_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_odd, check_positive, check_probability
from archetype.searchspace.ops.layers import (
    ChannelMlp,
    LayerScale,
    PreNormBlock,
    conv_bn,
    depthwise_conv,
    drop_path_or_identity,
    grid_to_tokens,
    tokens_to_grid,
    trunc_normal_parameter,
)
from archetype.searchspace.types import Image, TensorType, Tokens, Vector


def _check_heads(op: Operator, x: TensorType, heads: int) -> int:
    """The per-head width C / heads; refuses C not divisible by heads."""
    channels = x.dims()[-1] if isinstance(x, Tokens | Vector) else x.dims()[0]
    if channels % heads:
        raise OperatorTypeError(f"operator '{op.name}' cannot split the {channels} channels of {x} into {heads} heads")
    return channels // heads


@dataclass(frozen=True)
class _TokenBlock(Operator):
    """Shared hyperparameters and costs of the pre-norm transformer blocks on Tokens[N,C]."""

    heads: int = 2
    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts: ClassVar = (Tokens,)
    domain: ClassVar = {"heads": (1, 2, 4), "mlp_ratio": (2, 4)}
    square: ClassVar[bool] = True
    """Whether the block lays the tokens out on a square grid."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "heads", "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        _check_heads(self, x, self.heads)
        if self.square:
            grid_side(self, x)
        return x

    def build(self, x: Tokens) -> nn.Module:
        self.output_type(x)
        c, mixer = x.C, self._mixer(x)
        return PreNormBlock(nn.LayerNorm(c), mixer, nn.LayerNorm(c), ChannelMlp(c, c * self.mlp_ratio), self.drop_path)

    def params(self, x: Tokens) -> int:
        return 4 * x.C + mlp_params(x.C, x.C * self.mlp_ratio) + self._mixer_params(x)

    def macs(self, x: Tokens) -> int:
        self.output_type(x)
        return 2 * x.N * x.C * x.C * self.mlp_ratio + self._mixer_macs(x)

    def _mixer(self, x: Tokens) -> nn.Module:
        raise NotImplementedError

    def _mixer_params(self, x: Tokens) -> int:
        raise NotImplementedError

    def _mixer_macs(self, x: Tokens) -> int:
        raise NotImplementedError


class _MultiHeadAttention(nn.Module):
    """Softmax(q k^T / sqrt(d)) v over all tokens, with explicit matmuls (they export and are counted)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (channels // heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def _mhsa_params(c: int) -> int:
    return linear_params(c, 3 * c) + linear_params(c, c)


@operator(
    "mhsa_block",
    family="attention",
    paper="Training data-efficient image transformers & distillation through attention (DeiT), arXiv:2012.12877",
)
@dataclass(frozen=True)
class MhsaBlock(_TokenBlock):
    """ViT/DeiT transformer block: pre-norm multi-head self-attention over all tokens, then an MLP."""

    square: ClassVar[bool] = False

    def _mixer(self, x: Tokens) -> nn.Module:
        return _MultiHeadAttention(x.C, self.heads)

    def _mixer_params(self, x: Tokens) -> int:
        return _mhsa_params(x.C)

    def _mixer_macs(self, x: Tokens) -> int:
        return 4 * x.N * x.C * x.C + 2 * x.N * x.N * x.C


class _GatedPositionalAttention(nn.Module):
    """ConViT GPSA: per head, (1 - g) softmax(q k^T) + g softmax(v_pos . r_ij) with g = sigmoid(lambda)."""

    def __init__(self, channels: int, heads: int, side: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (channels // heads) ** -0.5
        self.qk = nn.Linear(channels, 2 * channels, bias=False)
        self.v = nn.Linear(channels, channels, bias=False)
        self.proj = nn.Linear(channels, channels)
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        dy = rows.flatten()[None, :] - rows.flatten()[:, None]  # key row minus query row, (N, N)
        dx = cols.flatten()[None, :] - cols.flatten()[:, None]
        self.register_buffer("rel", torch.stack([dx**2 + dy**2, dx, dy], dim=-1).float(), persistent=False)
        self.pos = nn.Parameter(self._local_init(heads))  # (h, 3): v_pos of each head
        self.gate = nn.Parameter(torch.ones(heads))  # lambda; sigmoid(1) favours the positional part at first

    @staticmethod
    def _local_init(heads: int) -> torch.Tensor:
        """v_pos = -(1, -2 dx_h, -2 dy_h): head h attends around its own offset, like a conv kernel tap."""
        k = math.ceil(math.sqrt(heads))
        pos = torch.zeros(heads, 3)
        for h in range(heads):
            oy, ox = h // k - k // 2, h % k - k // 2
            pos[h] = torch.tensor([-1.0, 2.0 * ox, 2.0 * oy])
        return pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q, k = self.qk(x).reshape(b, n, 2, self.heads, d).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        v = self.v(x).reshape(b, n, self.heads, d).transpose(1, 2)
        content = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, N, N)
        positional = (self.rel[None] * self.pos[:, None, None, :]).sum(-1).softmax(dim=-1)  # (h, N, N)
        gate = torch.sigmoid(self.gate)[None, :, None, None]
        attn = (1.0 - gate) * content + gate * positional
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


@operator(
    "gpsa_block",
    family="attention",
    paper="ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases, arXiv:2103.10697",
)
@dataclass(frozen=True)
class GpsaBlock(_TokenBlock):
    """ConViT block: gated positional self-attention on a square token grid, then an MLP."""

    def _mixer(self, x: Tokens) -> nn.Module:
        return _GatedPositionalAttention(x.C, self.heads, grid_side(self, x))

    def _mixer_params(self, x: Tokens) -> int:
        return 3 * x.C * x.C + linear_params(x.C, x.C) + 4 * self.heads

    def _mixer_macs(self, x: Tokens) -> int:
        return 4 * x.N * x.C * x.C + 2 * x.N * x.N * x.C  # positional scores: element-wise and input-independent


class _CrossCovarianceAttention(nn.Module):
    """XCiT XCA: a d x d attention between channels per head, q and k L2-normalised along the tokens."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1)  # (B, h, d, N)
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # (B, h, d, d)
        return self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, c))


class _LocalPatchInteraction(nn.Module):
    """XCiT LPI: depthwise 3x3, GELU, batch norm, depthwise 3x3 on the token grid."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.body = nn.Sequential(
            depthwise_conv(channels, 3), nn.GELU(), nn.BatchNorm2d(channels), depthwise_conv(channels, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_to_tokens(self.body(tokens_to_grid(x, self.side)))


class _XcitBlockModule(nn.Module):
    def __init__(self, channels: int, heads: int, side: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.xca = nn.LayerNorm(channels), _CrossCovarianceAttention(channels, heads)
        self.norm2, self.lpi = nn.LayerNorm(channels), _LocalPatchInteraction(channels, side)
        self.norm3, self.mlp = nn.LayerNorm(channels), ChannelMlp(channels, hidden)
        self.scale1, self.scale2, self.scale3 = (LayerScale(channels, 1.0) for _ in range(3))
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.scale1(self.xca(self.norm1(x))))
        x = x + self.drop_path(self.scale2(self.lpi(self.norm2(x))))
        return x + self.drop_path(self.scale3(self.mlp(self.norm3(x))))


@operator(
    "xca_block",
    family="attention",
    paper="XCiT: Cross-Covariance Image Transformers, arXiv:2106.09681",
)
@dataclass(frozen=True)
class XcaBlock(_TokenBlock):
    """XCiT block: cross-covariance attention, local patch interaction and an MLP, each with LayerScale."""

    def build(self, x: Tokens) -> nn.Module:
        self.output_type(x)
        return _XcitBlockModule(x.C, self.heads, grid_side(self, x), x.C * self.mlp_ratio, self.drop_path)

    def _mixer_params(self, x: Tokens) -> int:
        c = x.C
        xca = _mhsa_params(c) + self.heads
        lpi = 2 * depthwise_params(c, 3) + bn_params(c)
        return 2 * c + 3 * c + xca + lpi  # the third norm, LayerScale, XCA, LPI

    def _mixer_macs(self, x: Tokens) -> int:
        d = x.C // self.heads
        return 4 * x.N * x.C * x.C + 2 * x.N * x.C * d + 2 * 9 * x.N * x.C


class _WindowAttention(nn.Module):
    """Multi-head self-attention inside each non-overlapping window x window group of the token grid."""

    def __init__(self, channels: int, heads: int, side: int, window: int) -> None:
        super().__init__()
        self.side, self.window = side, window
        self.attn = _MultiHeadAttention(channels, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        g, w = self.side // self.window, self.window
        groups = x.reshape(b, g, w, g, w, c).transpose(2, 3).reshape(b * g * g, w * w, c)  # (B*g*g, w*w, C)
        out = self.attn(groups).reshape(b, g, g, w, w, c).transpose(2, 3)  # (B, g, w, g, w, C)
        return out.reshape(b, n, c)


@operator(
    "window_attention_block",
    family="attention",
    paper="Twins: Revisiting the Design of Spatial Attention in Vision Transformers (locally-grouped "
    "self-attention), arXiv:2104.13840",
)
@dataclass(frozen=True)
class WindowAttentionBlock(_TokenBlock):
    """Twins LSA block: self-attention within non-overlapping windows of a square token grid, then an MLP."""

    window: int = 2
    domain: ClassVar = {**_TokenBlock.domain, "window": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "window")

    def output_type(self, x: TensorType) -> Tokens:
        super().output_type(x)
        side = grid_side(self, x)
        if side % self.window:
            raise OperatorTypeError(
                f"operator '{self.name}' needs a grid side divisible by window {self.window}, got {x} (side {side})"
            )
        return x

    def _mixer(self, x: Tokens) -> nn.Module:
        return _WindowAttention(x.C, self.heads, grid_side(self, x), self.window)

    def _mixer_params(self, x: Tokens) -> int:
        return _mhsa_params(x.C)

    def _mixer_macs(self, x: Tokens) -> int:
        return 4 * x.N * x.C * x.C + 2 * x.N * self.window**2 * x.C


class _PoolingAttention(nn.Module):
    """MViTv2 pooling attention: K and V pooled per head by a strided depthwise conv and LayerNorm,
    decomposed relative positions along rows and columns, and the residual pooling connection (+ q)."""

    def __init__(self, channels: int, heads: int, side: int, pool: int) -> None:
        super().__init__()
        d = channels // heads
        self.heads, self.side, self.scale = heads, side, d**-0.5
        self.kside = conv_out(side, 3, pool, 1)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.pool_k = nn.Conv2d(d, d, 3, pool, padding=1, groups=d, bias=False)
        self.pool_v = nn.Conv2d(d, d, 3, pool, padding=1, groups=d, bias=False)
        self.norm_k, self.norm_v = nn.LayerNorm(d), nn.LayerNorm(d)
        self.proj = nn.Linear(channels, channels)
        span = side + (self.kside - 1) * pool  # distinct offsets q - pool * k along one axis
        self.rel_rows, self.rel_cols = trunc_normal_parameter(span, d), trunc_normal_parameter(span, d)
        q_pos, k_pos = torch.arange(side)[:, None], torch.arange(self.kside)[None, :]
        self.register_buffer("rel_index", q_pos - pool * k_pos + (self.kside - 1) * pool, persistent=False)

    def _pool(self, t: torch.Tensor, conv: nn.Conv2d, norm: nn.LayerNorm) -> torch.Tensor:
        b, h, _, d = t.shape
        grid = t.reshape(b * h, self.side, self.side, d).permute(0, 3, 1, 2)  # (B*h, d, s, s)
        pooled = grid_to_tokens(conv(grid))  # (B*h, Nk, d)
        return norm(pooled).reshape(b, h, -1, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, s, sk = self.heads, self.side, self.kside
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        k, v = self._pool(k, self.pool_k, self.norm_k), self._pool(v, self.pool_v, self.norm_v)  # (B, h, Nk, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, N, Nk)
        q_grid = q.reshape(b, h, s, s, -1)
        rel_r = torch.einsum("bhyxd,ykd->bhyxk", q_grid, self.rel_rows[self.rel_index])  # (B, h, s, s, sk)
        rel_c = torch.einsum("bhyxd,xkd->bhyxk", q_grid, self.rel_cols[self.rel_index])
        attn = attn.reshape(b, h, s, s, sk, sk) + rel_r[..., :, None] + rel_c[..., None, :]
        attn = attn.reshape(b, h, n, sk * sk).softmax(dim=-1)
        out = attn @ v + q  # residual pooling connection
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


@operator(
    "pooling_attention_block",
    family="attention",
    paper="MViTv2: Improved Multiscale Vision Transformers for Classification and Detection, arXiv:2112.01526",
)
@dataclass(frozen=True)
class PoolingAttentionBlock(_TokenBlock):
    """MViTv2 block: attention to keys and values pooled by stride `pool`, keeping the query tokens, then an MLP."""

    pool: int = 2
    domain: ClassVar = {**_TokenBlock.domain, "pool": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "pool")

    def _kside(self, x: Tokens) -> int:
        return conv_out(grid_side(self, x), 3, self.pool, 1)

    def _mixer(self, x: Tokens) -> nn.Module:
        return _PoolingAttention(x.C, self.heads, grid_side(self, x), self.pool)

    def _mixer_params(self, x: Tokens) -> int:
        d, side, kside = x.C // self.heads, grid_side(self, x), self._kside(x)
        span = side + (kside - 1) * self.pool
        pooling = 2 * (depthwise_params(d, 3, bias=False) + bn_params(d))  # K and V: conv and LayerNorm each
        return _mhsa_params(x.C) + pooling + 2 * span * d

    def _mixer_macs(self, x: Tokens) -> int:
        kside = self._kside(x)
        nk = kside * kside
        return 4 * x.N * x.C * x.C + 2 * 9 * nk * x.C + 2 * x.N * nk * x.C + 2 * x.N * kside * x.C


class _SimplifiedLinearAttention(nn.Module):
    """SLAB SLA: ReLU(q) (ReLU(k)^T v) / (ReLU(q) sum ReLU(k)) plus a depthwise 3x3 conv on v over the grid."""

    def __init__(self, channels: int, heads: int, side: int) -> None:
        super().__init__()
        self.heads, self.side = heads, side
        self.qkv = nn.Linear(channels, 3 * channels)
        self.dwc = depthwise_conv(channels, 3)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        q, k = torch.relu(q), torch.relu(k)
        kv = k.transpose(-2, -1) @ v  # (B, h, d, d)
        norm = q @ k.sum(dim=2, keepdim=True).transpose(-2, -1)  # (B, h, N, 1)
        out = (q @ kv) / (norm + 1e-6)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(b, n, c)
        local = grid_to_tokens(self.dwc(tokens_to_grid(v.transpose(1, 2).reshape(b, n, c), self.side)))
        return self.proj(out + local)


@operator(
    "linear_attention_block",
    family="attention",
    paper="SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized "
    "Batch Normalization, arXiv:2405.11582",
)
@dataclass(frozen=True)
class LinearAttentionBlock(_TokenBlock):
    """SLAB block: simplified ReLU linear attention, O(N C^2), with a depthwise conv on V, then an MLP."""

    def _mixer(self, x: Tokens) -> nn.Module:
        return _SimplifiedLinearAttention(x.C, self.heads, grid_side(self, x))

    def _mixer_params(self, x: Tokens) -> int:
        return _mhsa_params(x.C) + depthwise_params(x.C, 3)

    def _mixer_macs(self, x: Tokens) -> int:
        d = x.C // self.heads
        return 4 * x.N * x.C * x.C + 2 * x.N * x.C * d + x.N * x.C + 9 * x.N * x.C


class _LeViTAttentionModule(nn.Module):
    """LeViT attention on a map: q/k/v by 1x1 conv + BN, softmax(q k^T / sqrt(D) + B[|dy|, |dx|]) v,
    Hardswish, 1x1 conv + BN projection, residual."""

    def __init__(self, channels: int, heads: int, key_dim: int, value_dim: int, height: int, width: int) -> None:
        super().__init__()
        self.heads, self.key_dim, self.value_dim, self.scale = heads, key_dim, value_dim, key_dim**-0.5
        qkv = heads * (2 * key_dim + value_dim)
        self.qkv = conv_bn(channels, qkv, 1, act=None)
        self.proj = nn.Sequential(nn.Hardswish(), conv_bn(heads * value_dim, channels, 1, act=None))
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        offsets = (rows[:, None] - rows[None, :]).abs() * width + (cols[:, None] - cols[None, :]).abs()
        self.register_buffer("bias_index", offsets, persistent=False)  # (N, N) into the H*W distinct offsets
        self.bias = nn.Parameter(torch.zeros(heads, height * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hgt, wid = x.shape
        qkv = self.qkv(x).reshape(b, self.heads, 2 * self.key_dim + self.value_dim, hgt * wid)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=2)  # (B, h, D|D|Dv, N)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.bias[:, self.bias_index]  # (B, h, N, N)
        out = v @ attn.softmax(dim=-1).transpose(-2, -1)  # (B, h, Dv, N)
        return x + self.proj(out.reshape(b, self.heads * self.value_dim, hgt, wid))


@operator(
    "levit_attention",
    family="attention",
    paper="LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference, arXiv:2104.01136",
)
@dataclass(frozen=True)
class LeViTAttention(Operator):
    """LeViT residual attention unit on a feature map, with a learned per-head relative-offset attention bias."""

    heads: int = 2
    key_dim: int = 16
    value_ratio: int = 2
    accepts: ClassVar = (Image,)
    domain: ClassVar = {"heads": (1, 2, 4), "key_dim": (16, 32)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "heads", "key_dim", "value_ratio")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x

    def _qkv(self) -> int:
        return self.heads * (2 * self.key_dim + self.value_ratio * self.key_dim)

    def build(self, x: Image) -> nn.Module:
        self.output_type(x)
        return _LeViTAttentionModule(x.C, self.heads, self.key_dim, self.value_ratio * self.key_dim, x.H, x.W)

    def params(self, x: Image) -> int:
        values = self.heads * self.value_ratio * self.key_dim
        qkv = self._qkv()
        return x.C * qkv + bn_params(qkv) + values * x.C + bn_params(x.C) + self.heads * x.H * x.W

    def macs(self, x: Image) -> int:
        n, values = x.H * x.W, self.heads * self.value_ratio * self.key_dim
        return n * x.C * self._qkv() + n * n * (self.heads * self.key_dim + values) + n * values * x.C


class _LambdaLayerModule(nn.Module):
    """Lambda layer: y_n = q_n (lambda_c + lambda_p_n) with lambda_c = softmax(K)^T V (content) and
    lambda_p_n = E_n^T V from a relative embedding over an r x r context, computed as a 3D convolution."""

    def __init__(self, channels: int, heads: int, key_dim: int, context: int) -> None:
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, channels // heads
        self.q = conv_bn(channels, heads * key_dim, 1, act=None)
        self.k = nn.Conv2d(channels, key_dim, 1, bias=False)
        self.v = conv_bn(channels, self.value_dim, 1, act=None)
        pad = context // 2
        self.position = nn.Conv3d(1, key_dim, (1, context, context), padding=(0, pad, pad), bias=False)
        self.out = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        n = hgt * wid
        q = self.q(x).reshape(b, self.heads, self.key_dim, n)  # (B, h, k, N)
        keys = self.k(x).reshape(b, self.key_dim, n).softmax(dim=-1)  # (B, k, N)
        v = self.v(x)  # (B, v, H, W)
        content = keys @ v.reshape(b, self.value_dim, n).transpose(1, 2)  # (B, k, v)
        position = self.position(v.unsqueeze(1)).reshape(b, self.key_dim, self.value_dim, n)  # (B, k, v, N)
        lambdas = position + content.unsqueeze(-1)
        y = torch.einsum("bhkn,bkvn->bhvn", q, lambdas)  # (B, h, v, N)
        return self.out(y.reshape(b, c, hgt, wid))


@operator(
    "lambda_layer",
    family="attention",
    paper="LambdaNetworks: Modeling Long-Range Interactions Without Attention, arXiv:2102.08602",
)
@dataclass(frozen=True)
class LambdaLayer(Operator):
    """A multi-query lambda layer (content and r x r position lambdas) with BN and ReLU, in place of a 3x3 conv."""

    heads: int = 4
    key_dim: int = 16
    context: int = 7
    accepts: ClassVar = (Image,)
    domain: ClassVar = {"heads": (1, 2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "heads", "key_dim")
        check_odd(self, "context")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        _check_heads(self, x, self.heads)
        return x

    def build(self, x: Image) -> nn.Module:
        self.output_type(x)
        return _LambdaLayerModule(x.C, self.heads, self.key_dim, self.context)

    def params(self, x: Image) -> int:
        hk, k, v = self.heads * self.key_dim, self.key_dim, x.C // self.heads
        return x.C * (hk + k + v) + bn_params(hk) + bn_params(v) + k * self.context**2 + bn_params(x.C)

    def macs(self, x: Image) -> int:
        self.output_type(x)
        n, hk, k, v = x.H * x.W, self.heads * self.key_dim, self.key_dim, x.C // self.heads
        return n * x.C * (hk + k + v) + n * k * v + n * k * v * self.context**2 + n * hk * v


_CLASS_LAYER_SCALE = 0.1
"""CaiT's LayerScale initialisation for shallow stacks."""


class _ClassAttentionLayer(nn.Module):
    """CaiT class attention: only the class token queries [class, patches]; the patches stay unchanged."""

    def __init__(self, channels: int, heads: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, (channels // heads) ** -0.5
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.q, self.k, self.v = (nn.Linear(channels, channels) for _ in range(3))
        self.proj = nn.Linear(channels, channels)
        self.mlp = ChannelMlp(channels, hidden)
        self.scale1, self.scale2 = LayerScale(channels, _CLASS_LAYER_SCALE), LayerScale(channels, _CLASS_LAYER_SCALE)
        self.drop_path = drop_path_or_identity(drop_path)

    def _attend(self, z: torch.Tensor) -> torch.Tensor:
        b, n, c = z.shape
        d = c // self.heads
        q = self.q(z[:, :1]).reshape(b, 1, self.heads, d).transpose(1, 2)  # (B, h, 1, d)
        k = self.k(z).reshape(b, n, self.heads, d).transpose(1, 2)  # (B, h, 1+N, d)
        v = self.v(z).reshape(b, n, self.heads, d).transpose(1, 2)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, 1, 1+N)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, 1, c))

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        cls = cls + self.drop_path(self.scale1(self._attend(self.norm1(torch.cat([cls, patches], dim=1)))))
        return cls + self.drop_path(self.scale2(self.mlp(self.norm2(cls))))


class _ClassTokenHeadModule(nn.Module):
    def __init__(self, channels: int, heads: int, hidden: int, depth: int, classes: int, drop_path: float) -> None:
        super().__init__()
        self.cls = trunc_normal_parameter(1, 1, channels)
        self.layers = nn.ModuleList(_ClassAttentionLayer(channels, heads, hidden, drop_path) for _ in range(depth))
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls.repeat(x.shape[0], 1, 1)  # (B, 1, C); a copy: FlopCounterMode's module hooks reject a view here
        for layer in self.layers:
            cls = layer(cls, x)
        return self.fc(self.norm(cls[:, 0]))  # (B, classes)


@operator(
    "class_token_head",
    family="attention",
    paper="Going deeper with Image Transformers (CaiT), arXiv:2103.17239",
)
@dataclass(frozen=True)
class ClassTokenHead(Operator):
    """CaiT head: a learned class token reads the patches through class-attention layers, then LayerNorm + linear."""

    classes: int
    depth: int = 2
    heads: int = 2
    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts: ClassVar = (Tokens,)
    domain: ClassVar = {"depth": (1, 2), "heads": (1, 2, 4), "mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "classes", "depth", "heads", "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Vector:
        self.check_input(x)
        _check_heads(self, x, self.heads)
        return Vector(self.classes)

    def build(self, x: Tokens) -> nn.Module:
        self.output_type(x)
        return _ClassTokenHeadModule(x.C, self.heads, x.C * self.mlp_ratio, self.depth, self.classes, self.drop_path)

    def params(self, x: Tokens) -> int:
        c = x.C
        layer = 4 * c + 4 * linear_params(c, c) + mlp_params(c, c * self.mlp_ratio) + 2 * c
        return c + self.depth * layer + 2 * c + linear_params(c, self.classes)

    def macs(self, x: Tokens) -> int:
        c, tokens = x.C, x.N + 1
        layer = 2 * c * c + 2 * tokens * c * c + 2 * tokens * c + 2 * c * c * self.mlp_ratio
        return self.depth * layer + c * self.classes
