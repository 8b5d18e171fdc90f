"""Frequency-domain mixers: wavelet (WaveMix), spectral pooling (SPANet) and global Fourier filters (GFNet).

The Fourier transforms are torch.fft.rfft2 / irfft2, which export to ONNX's DFT (opset 18). The flop counter does not
count FFTs or element-wise products, so neither do the ``macs`` formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, mlp_params
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_positive, check_probability
from archetype.searchspace.ops.layers import ChannelMlp, ConvMlp, PreNormBlock, drop_path_or_identity
from archetype.searchspace.types import Image, TensorType


class _WaveMixModule(nn.Module):
    def __init__(self, c: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.c = c
        ll, lh = [[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [-1.0, -1.0]]
        hl, hh = [[1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]
        haar = 0.5 * torch.tensor([ll, lh, hl, hh])
        self.register_buffer("haar", haar[:, None].repeat(c, 1, 1, 1), persistent=False)  # (4C, 1, 2, 2)
        self.mlp = ConvMlp(4 * c, hidden, c)
        self.up = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.norm = nn.BatchNorm2d(c)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        bands = F.conv2d(x, self.haar, stride=2, groups=self.c)  # (B, 4C, H/2, W/2): level-1 Haar DWT
        return x + self.drop_path(self.norm(self.up(self.mlp(bands))))


@operator(
    "wavemix_block",
    family="frequency",
    paper="WaveMix: A Resource-efficient Neural Network for Image Analysis, arXiv:2205.14375",
)
@dataclass(frozen=True)
class WaveMixBlock(Operator):
    """WaveMix block: Haar DWT to 4C bands at half size, 1x1-conv MLP to C, transposed conv back up, BN, residual."""

    mlp_ratio: int = 2
    drop_path: float = 0.0
    accepts = (Image,)
    domain: ClassVar = {"mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        if x.H % 2 or x.W % 2:
            raise OperatorTypeError(f"operator '{self.name}' needs an even height and width for its DWT, got {x}")
        return x

    def build(self, x: Image) -> nn.Module:
        self.output_type(x)
        return _WaveMixModule(x.C, self.mlp_ratio * x.C, self.drop_path)

    def params(self, x: Image) -> int:
        c = x.C
        return mlp_params(4 * c, self.mlp_ratio * c, c) + conv_params(c, c, 2, bias=True) + bn_params(c)

    def macs(self, x: Image) -> int:
        c, hidden, h, w = x.C, self.mlp_ratio * x.C, x.H // 2, x.W // 2
        dwt = conv_macs(c, 4 * c, 2, h, w, groups=c)
        mlp = conv_macs(4 * c, hidden, 1, h, w) + conv_macs(hidden, c, 1, h, w)
        return dwt + mlp + conv_macs(c, c, 2, h, w)  # the transposed conv does C*C*4 MACs per input pixel


class _SpectralPoolingModulation(nn.Module):
    """SPAM: spectral pooling of the context at several cut-offs, low and high parts mixed, modulating the value."""

    def __init__(self, c: int, h: int, w: int, radii: int) -> None:
        super().__init__()
        self.h, self.w = h, w
        self.value = nn.Conv2d(c, c, 1)
        self.context = nn.Conv2d(c, c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        dist = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)  # (H, W//2+1)
        cutoffs = [0.5 * (k + 1) / (radii + 1) for k in range(radii)]
        self.register_buffer("masks", torch.stack([(dist <= r).float() for r in cutoffs]), persistent=False)
        self.low = nn.Parameter(torch.full((radii, c), 1.0 / radii))  # weight of each low-pass part, per channel
        self.high = nn.Parameter(torch.zeros(radii, c))  # weight of each high-pass remainder, per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        # sum_k low_k * LP_k(ctx) + high_k * (ctx - LP_k(ctx)) is one filter per channel in the frequency domain
        weights = (self.low - self.high)[:, :, None, None] * self.masks[:, None]  # (K, C, H, W//2+1)
        response = weights.sum(0) + self.high.sum(0)[:, None, None]
        spectrum = torch.fft.rfft2(self.context(x), norm="ortho") * response
        context = torch.fft.irfft2(spectrum, s=(self.h, self.w), norm="ortho")
        return self.proj(self.value(x) * context)


@operator(
    "spectral_pool_block",
    family="frequency",
    paper="SPANet: Frequency-balancing Token Mixer using Spectral Pooling Aggregation Modulation, arXiv:2308.11568",
)
@dataclass(frozen=True)
class SpectralPoolBlock(Operator):
    """SPANet block: spectral pooling aggregation modulation (SPAM) token mixer and a channel MLP, each residual."""

    radii: int = 3
    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts = (Image,)
    domain: ClassVar = {"radii": (2, 3), "mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "radii", "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x

    def build(self, x: Image) -> nn.Module:
        c, mixer = x.C, _SpectralPoolingModulation(x.C, x.H, x.W, self.radii)
        return PreNormBlock(nn.BatchNorm2d(c), mixer, nn.BatchNorm2d(c), ConvMlp(c, self.mlp_ratio * c), self.drop_path)

    def params(self, x: Image) -> int:
        c = x.C
        mixer = 3 * conv_params(c, c, 1, bias=True) + 2 * self.radii * c
        return 2 * bn_params(c) + mixer + mlp_params(c, self.mlp_ratio * c)

    def macs(self, x: Image) -> int:
        c, hidden = x.C, self.mlp_ratio * x.C
        return 3 * conv_macs(c, c, 1, x.H, x.W) + 2 * conv_macs(c, hidden, 1, x.H, x.W)


class _GlobalFilterModule(nn.Module):
    """2-D FFT over two spatial dimensions, times a learnable complex filter, inverse FFT."""

    def __init__(self, shape: tuple[int, int, int], dims: tuple[int, int], size: tuple[int, int]) -> None:
        super().__init__()
        self.dims, self.size = dims, size
        self.real = nn.Parameter(torch.randn(shape) * 0.02)
        self.imag = nn.Parameter(torch.randn(shape) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(x, dim=self.dims, norm="ortho") * torch.complex(self.real, self.imag)
        return torch.fft.irfft2(spectrum, s=self.size, dim=self.dims, norm="ortho")


def _filter_params(x: Image) -> int:
    return 2 * x.C * x.H * (x.W // 2 + 1)


@operator(
    "global_filter", family="frequency", paper="Global Filter Networks for Image Classification, arXiv:2107.00645"
)
@dataclass(frozen=True)
class GlobalFilter(Operator):
    """GFNet global filter: 2-D FFT of the map, element-wise product with a learnable complex filter, inverse FFT."""

    accepts = (Image,)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x

    def build(self, x: Image) -> nn.Module:
        return _GlobalFilterModule((x.C, x.H, x.W // 2 + 1), (2, 3), (x.H, x.W))  # on (B, C, H, W)

    def params(self, x: Image) -> int:
        return _filter_params(x)

    def macs(self, x: Image) -> int:
        return 0


class _GlobalFilterBlockModule(nn.Module):
    def __init__(self, x: Image, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(x.C)
        self.filter = _GlobalFilterModule((x.H, x.W // 2 + 1, x.C), (1, 2), (x.H, x.W))  # on (B, H, W, C)
        self.norm2 = nn.LayerNorm(x.C)
        self.mlp = ChannelMlp(x.C, hidden)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        y = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.mlp(self.norm2(self.filter(self.norm1(y))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


@operator(
    "global_filter_block",
    family="frequency",
    paper="Global Filter Networks for Image Classification, arXiv:2107.00645",
)
@dataclass(frozen=True)
class GlobalFilterBlock(Operator):
    """GFNet block: LayerNorm, global filter, LayerNorm, channel MLP, with one residual around them all."""

    mlp_ratio: int = 4
    drop_path: float = 0.0
    accepts = (Image,)
    domain: ClassVar = {"mlp_ratio": (2, 4)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "mlp_ratio")
        check_probability(self, "drop_path")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        return x

    def build(self, x: Image) -> nn.Module:
        return _GlobalFilterBlockModule(x, self.mlp_ratio * x.C, self.drop_path)

    def params(self, x: Image) -> int:
        return 4 * x.C + _filter_params(x) + mlp_params(x.C, self.mlp_ratio * x.C)

    def macs(self, x: Image) -> int:
        return 2 * x.H * x.W * x.C * self.mlp_ratio * x.C
