"""State-space and recurrent token mixers (2-D SSM, Vision-LSTM's mLSTM, Hyena), written as exportable matmuls."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from archetype.searchspace.cost import bn_params, grid_side, linear_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_positive, check_probability
from archetype.searchspace.ops.layers import (
    ChannelMlp,
    PreNormBlock,
    drop_path_or_identity,
    grid_to_tokens,
    tokens_to_grid,
)
from archetype.searchspace.types import TensorType, Tokens


class _Ssm2dModule(nn.Module):
    """Per channel, a diagonal LTI state space scanned down and up the rows, then left and right along the columns.

    Each scan of a side-s axis is the matmul with the kernel matrix K[i, j] = sum_n c_n b_n a_n^|i-j| (one sum for
    the forward part i >= j and one, with its own decays and gains, for the backward part i <= j), so the layer is
    y = K_vertical @ U @ K_horizontal^T + D * U on each channel's s x s grid U.
    """

    def __init__(self, c: int, side: int, state: int) -> None:
        super().__init__()
        self.c, self.side = c, side
        decay = torch.linspace(0.6, 0.95, state) if state > 1 else torch.tensor([0.8])
        # axes (vertical, horizontal) x directions (forward, backward) x state x channel
        self.decay = nn.Parameter(torch.logit(decay)[None, None, :, None].repeat(2, 2, 1, c))
        self.b = nn.Parameter(torch.ones(2, 2, state, c))
        self.c_gain = nn.Parameter(torch.randn(2, 2, state, c) / math.sqrt(2 * state))
        self.d = nn.Parameter(torch.ones(c))
        lag = torch.arange(side)[:, None] - torch.arange(side)[None, :]
        self.register_buffer("lag", lag.clamp(min=0).float(), persistent=False)
        self.register_buffer("causal", (lag >= 0).float(), persistent=False)

    def kernels(self) -> torch.Tensor:
        """The scan matrices of both axes, (2, C, s, s)."""
        log_a = F.logsigmoid(self.decay)[..., None, None]  # (2, 2, S, C, 1, 1)
        powers = torch.exp(log_a * self.lag) * self.causal  # a^(i-j) for i >= j, else 0
        terms = ((self.b * self.c_gain)[..., None, None] * powers).sum(2)  # (2 axes, 2 dirs, C, s, s)
        return terms[:, 0] + terms[:, 1].transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        u = tokens_to_grid(x, self.side)  # (B, C, s, s), tokens in row-major order
        k = self.kernels()
        y = k[0] @ u @ k[1].transpose(-1, -2) + self.d[:, None, None] * u
        return grid_to_tokens(y)


def _ssm2d_params(c: int, state: int) -> int:
    return 12 * state * c + c


def _ssm2d_macs(x: Tokens, side: int) -> int:
    return 2 * x.C * x.N * side


_SSM2D_PAPER = "2-D SSM: A General Spatial Layer for Visual Transformers, arXiv:2306.06635"


@operator("ssm2d", family="state-space", paper=_SSM2D_PAPER)
@dataclass(frozen=True)
class Ssm2d(Operator):
    """2-D state-space layer: per-channel diagonal linear recurrences along rows and columns, both directions."""

    state: int = 2
    accepts = (Tokens,)
    domain: ClassVar = {"state": (1, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "state")

    def output_type(self, x: TensorType) -> Tokens:
        grid_side(self, x)
        return x

    def build(self, x: Tokens) -> nn.Module:
        return _Ssm2dModule(x.C, grid_side(self, x), self.state)

    def params(self, x: Tokens) -> int:
        return _ssm2d_params(x.C, self.state)

    def macs(self, x: Tokens) -> int:
        return _ssm2d_macs(x, grid_side(self, x))


@operator("ssm2d_block", family="state-space", paper=_SSM2D_PAPER)
@dataclass(frozen=True)
class Ssm2dBlock(Operator):
    """Pre-norm residual 2-D SSM token mixer followed by a pre-norm residual channel MLP."""

    state: int = 2
    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts = (Tokens,)
    domain: ClassVar = {"state": (1, 4), "mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "state", "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Tokens:
        grid_side(self, x)
        return x

    def build(self, x: Tokens) -> nn.Module:
        c, ssm = x.C, _Ssm2dModule(x.C, grid_side(self, x), self.state)
        return PreNormBlock(nn.LayerNorm(c), ssm, nn.LayerNorm(c), ChannelMlp(c, self.mlp_ratio * c), self.drop_path)

    def params(self, x: Tokens) -> int:
        return 4 * x.C + _ssm2d_params(x.C, self.state) + mlp_params(x.C, self.mlp_ratio * x.C)

    def macs(self, x: Tokens) -> int:
        return _ssm2d_macs(x, grid_side(self, x)) + 2 * x.N * x.C * self.mlp_ratio * x.C


class _BlockDiagonalLinear(nn.Module):
    """A linear map with square blocks on the diagonal (xLSTM's head-wise q, k, v projections)."""

    def __init__(self, dim: int, block: int) -> None:
        super().__init__()
        self.block = block
        self.weight = nn.Parameter(torch.randn(dim // block, block, block) / math.sqrt(block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, E)
        xb = x.unflatten(-1, (-1, self.block))  # (B, N, E/block, block)
        return torch.einsum("bngi,goi->bngo", xb, self.weight).flatten(-2)


_CONV_KERNEL = 4
_QKV_BLOCK = 4


class _MlstmModule(nn.Module):
    def __init__(self, n: int, c: int, inner: int, heads: int, reverse: bool, drop_path: float) -> None:
        super().__init__()
        self.inner, self.heads, self.head_dim, self.reverse = inner, heads, inner // heads, reverse
        self.norm = nn.LayerNorm(c)
        self.up = nn.Linear(c, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, _CONV_KERNEL, groups=inner)  # causal: padded on the left
        self.q = _BlockDiagonalLinear(inner, _QKV_BLOCK)
        self.k = _BlockDiagonalLinear(inner, _QKV_BLOCK)
        self.v = _BlockDiagonalLinear(inner, _QKV_BLOCK)
        self.igate = nn.Linear(3 * inner, heads)
        self.fgate = nn.Linear(3 * inner, heads)
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, heads))
        self.out_weight = nn.Parameter(torch.ones(inner))
        self.out_bias = nn.Parameter(torch.zeros(inner))
        self.skip = nn.Parameter(torch.ones(inner))
        self.down = nn.Linear(inner, c)
        self.drop_path = drop_path_or_identity(drop_path)
        self.register_buffer("causal", torch.ones(n, n, dtype=torch.bool).tril(), persistent=False)

    def cell(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i_pre: torch.Tensor, f_pre: torch.Tensor
    ) -> torch.Tensor:
        """Parallel mLSTM: h = C v / max(|C 1|, exp(-m)), C = q k^T / sqrt(d) * exp(D - m), D the log gate matrix."""
        heads, dh = self.heads, self.head_dim
        q, k, v = (t.unflatten(-1, (heads, dh)).transpose(1, 2) for t in (q, k, v))  # (B, H, N, dh)
        cum = torch.cumsum(F.logsigmoid(f_pre), dim=-1)  # (B, H, N): log of the forget gates' running product
        log_d = cum[..., :, None] - cum[..., None, :] + i_pre[..., None, :]  # (B, H, N, N): [t, s]
        log_d = log_d.masked_fill(~self.causal, float("-inf"))
        m = log_d.amax(dim=-1, keepdim=True)  # (B, H, N, 1) stabiliser
        scores = (q @ k.transpose(-1, -2)) * (torch.exp(log_d - m) / math.sqrt(dh))
        norm = torch.maximum(scores.sum(dim=-1, keepdim=True).abs(), torch.exp(-m))
        h = F.layer_norm((scores / (norm + 1e-6)) @ v, (dh,))  # per-head norm, (B, H, N, dh)
        return h.transpose(1, 2).flatten(-2) * self.out_weight + self.out_bias  # (B, N, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        if self.reverse:
            x = x.flip(1)
        xm, z = self.up(self.norm(x)).chunk(2, dim=-1)  # (B, N, E) each
        xc = F.silu(self.conv(F.pad(xm.transpose(1, 2), (_CONV_KERNEL - 1, 0))).transpose(1, 2))
        q, k, v = self.q(xc), self.k(xc), self.v(xm)
        gate_in = torch.cat([q, k, v], dim=-1)
        i_pre, f_pre = self.igate(gate_in).transpose(1, 2), self.fgate(gate_in).transpose(1, 2)  # (B, H, N)
        h = self.cell(q, k, v, i_pre, f_pre) + self.skip * xc
        y = x + self.drop_path(self.down(h * F.silu(z)))
        return y.flip(1) if self.reverse else y


@operator(
    "mlstm_block",
    family="state-space",
    paper="Vision-LSTM: xLSTM as Generic Vision Backbone, arXiv:2406.04303",
)
@dataclass(frozen=True)
class MlstmBlock(Operator):
    """ViL block: xLSTM's mLSTM (parallel form, matrix memory, exponential input and sigmoid forget gates) with
    up-projection, causal conv and output gate, pre-norm and residual; ``reverse`` scans the tokens backwards."""

    reverse: bool = False
    heads: int = 4
    expand: int = 2
    drop_path: float = 0.0
    accepts = (Tokens,)
    domain: ClassVar = {"reverse": (False, True), "heads": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "heads", "expand")
        check_probability(self, "drop_path")

    def _inner(self, x: Tokens) -> int:
        return self.expand * x.C

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        inner = self._inner(x)
        if inner % self.heads or (inner // self.heads) % _QKV_BLOCK:
            raise OperatorTypeError(
                f"operator '{self.name}': {x} expanded to {inner} channels does not split into {self.heads} heads "
                f"whose size is a multiple of {_QKV_BLOCK}"
            )
        return x

    def build(self, x: Tokens) -> nn.Module:
        self.output_type(x)
        return _MlstmModule(x.N, x.C, self._inner(x), self.heads, self.reverse, self.drop_path)

    def params(self, x: Tokens) -> int:
        c, e, h = x.C, self._inner(x), self.heads
        conv = e * _CONV_KERNEL + e  # depthwise, with a bias
        qkv = 3 * e * _QKV_BLOCK  # block-diagonal, no bias
        gates = 2 * linear_params(3 * e, h)
        return bn_params(c) + linear_params(c, 2 * e) + conv + qkv + gates + 3 * e + linear_params(e, c)

    def macs(self, x: Tokens) -> int:
        n, c, e, h = x.N, x.C, self._inner(x), self.heads
        return n * (c * 2 * e + e * _CONV_KERNEL + 3 * e * _QKV_BLOCK + 2 * 3 * e * h + e * c) + 2 * n * n * e


_FILTER_BANDS = 4
_FILTER_FEATURES = 1 + 2 * _FILTER_BANDS
_SHORT_KERNEL = 3


class _ImplicitFilter(nn.Module):
    """Hyena's long filter: an FFN with sine activations of positional features, times an exponential decay window.

    The filter depends on the weights only, not on the batch: in eval mode without autograd it is generated once and
    reused until a weight changes (as ONNX Runtime folds it into a constant), so it is no per-sample cost.
    """

    def __init__(self, n: int, channels: int, hidden: int) -> None:
        super().__init__()
        t = torch.linspace(0, 1, n)[:, None]  # (N, 1)
        bands = torch.arange(1, _FILTER_BANDS + 1)[None, :]
        features = torch.cat([t, torch.sin(2 * math.pi * bands * t), torch.cos(2 * math.pi * bands * t)], dim=-1)
        self.register_buffer("features", features, persistent=False)  # (N, 1 + 2 * bands)
        rates = torch.linspace(math.log(100) / 1.5, math.log(100) / 0.3, channels)  # slow to fast decay
        self.register_buffer("window", torch.exp(-t * rates), persistent=False)  # (N, channels)
        self.fc1 = nn.Linear(_FILTER_FEATURES, hidden)
        self.freq1 = nn.Parameter(torch.ones(hidden))
        self.fc2 = nn.Linear(hidden, hidden)
        self.freq2 = nn.Parameter(torch.ones(hidden))
        self.fc3 = nn.Linear(hidden, channels, bias=False)
        self._frozen: tuple[tuple[tuple[int, int], ...], torch.Tensor] | None = None

    def generate(self) -> torch.Tensor:
        h = torch.sin(self.freq1 * self.fc1(self.features))
        h = torch.sin(self.freq2 * self.fc2(h))
        return (self.fc3(h) * self.window).transpose(0, 1)  # (channels, N)

    def forward(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.generate()
        key = tuple((p._version, p.data_ptr()) for p in self.parameters())  # changes with any in-place update
        if self._frozen is None or self._frozen[0] != key:
            self._frozen = (key, self.generate())
        return self._frozen[1]

    def train(self, mode: bool = True) -> _ImplicitFilter:
        super().train(mode)
        if not mode:
            with torch.no_grad():
                self()  # generate the inference filter now rather than in the first timed forward
        return self


class _HyenaModule(nn.Module):
    def __init__(self, n: int, c: int, order: int, filter_hidden: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.n, self.c, self.order = n, c, order
        self.fft_size = 1 << (2 * n - 1).bit_length()  # >= 2N - 1: the circular convolution is a linear one
        self.norm1 = nn.LayerNorm(c)
        self.in_proj = nn.Linear(c, (order + 1) * c)
        self.short = nn.Conv1d((order + 1) * c, (order + 1) * c, _SHORT_KERNEL, groups=(order + 1) * c)
        self.filter = _ImplicitFilter(n, order * c, filter_hidden)
        self.filter_bias = nn.Parameter(torch.randn(order * c))
        self.out_proj = nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = ChannelMlp(c, hidden)
        self.drop_path = drop_path_or_identity(drop_path)

    def long_conv(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Causal convolution of z (B, C, N) with per-channel filters h (C, N), exactly, by FFT."""
        spectrum = torch.fft.rfft(z, n=self.fft_size) * torch.fft.rfft(h, n=self.fft_size)
        return torch.fft.irfft(spectrum, n=self.fft_size)[..., : self.n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        u = self.in_proj(self.norm1(x)).transpose(1, 2)  # (B, (order+1)C, N)
        u = self.short(F.pad(u, (_SHORT_KERNEL - 1, 0)))  # causal short depthwise conv
        *gates, v = u.split(self.c, dim=1)  # order gates and the value, (B, C, N) each
        filters = self.filter().reshape(self.order, self.c, self.n)
        bias = self.filter_bias.reshape(self.order, self.c, 1)
        for i in range(self.order):  # z <- x_i * (h_i conv z)
            v = gates[i] * (self.long_conv(v, filters[i]) + bias[i] * v)
        x = x + self.drop_path(self.out_proj(v.transpose(1, 2)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@operator(
    "hyena_block",
    family="state-space",
    paper="Hyena Hierarchy: Towards Larger Convolutional Language Models, arXiv:2302.10866",
)
@dataclass(frozen=True)
class HyenaBlock(Operator):
    """Hyena operator (causal long implicit convolutions interleaved with gating) and a channel MLP, each residual."""

    mlp_ratio: int = 4
    order: int = 2
    filter_hidden: int = 32
    drop_path: float = 0.0
    accepts = (Tokens,)
    domain: ClassVar = {"mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "mlp_ratio", "order", "filter_hidden")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Tokens:
        self.check_input(x)
        return x

    def build(self, x: Tokens) -> nn.Module:
        return _HyenaModule(x.N, x.C, self.order, self.filter_hidden, self.mlp_ratio * x.C, self.drop_path)

    def params(self, x: Tokens) -> int:
        c, o, fh = x.C, self.order, self.filter_hidden
        streams = (o + 1) * c
        fc1, fc2, fc3 = linear_params(_FILTER_FEATURES, fh), linear_params(fh, fh), linear_params(fh, o * c, bias=False)
        filt = fc1 + fh + fc2 + fh + fc3 + o * c  # with the two frequency vectors and the filter bias
        mixer = linear_params(c, streams) + _SHORT_KERNEL * streams + streams + filt + linear_params(c, c)
        return 2 * bn_params(c) + mixer + mlp_params(c, self.mlp_ratio * c)

    def macs(self, x: Tokens) -> int:
        """Projections, short conv and MLP; the long filter is a constant of the weights at inference."""
        n, c = x.N, x.C
        streams = (self.order + 1) * c
        return n * c * streams + n * streams * _SHORT_KERNEL + n * c * c + 2 * n * c * self.mlp_ratio * c

