"""Small building blocks the operator modules share."""

from __future__ import annotations

import torch
from torch import nn

from archetype.searchspace.cost import same_padding

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "none": nn.Identity,
}


def conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "relu", dilation: int = 1
) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding, optionally dilated) -> BatchNorm2d -> optional activation."""
    padding = same_padding(kernel, dilation)
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def depthwise_conv(channels: int, kernel: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """A depthwise k x k Conv2d with 'same' padding at stride 1."""
    padding = same_padding(kernel, dilation)
    return nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, groups=channels, bias=bias)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the branch per sample with probability p and scale the rest by 1/(1-p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
        return x * mask / keep


def drop_path_or_identity(p: float) -> nn.Module:
    """A DropPath of probability p, or an identity when p is 0."""
    return DropPath(p) if p > 0.0 else nn.Identity()


class LayerScale(nn.Module):
    """A learned per-channel scale, channels last (B, ..., C) or, with ``channels_first``, (B, C, H, W)."""

    def __init__(self, channels: int, init: float, channels_first: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels, 1, 1) if channels_first else (channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def layer_scale_or_identity(channels: int, init: float, channels_first: bool = False) -> nn.Module:
    """A LayerScale starting at ``init``, or an identity when ``init`` is 0 (layer scale turned off)."""
    return LayerScale(channels, init, channels_first) if init > 0 else nn.Identity()


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelMlp(nn.Module):
    """Linear, activation (GELU by default), optional norm, linear over the last dimension: a block's token MLP."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.norm = nn.Identity() if norm is None else norm  # on the hidden features (ConvNeXt V2's GRN)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))  # (..., dim) via (..., hidden)


class ConvMlp(nn.Module):
    """1x1 conv, GELU, 1x1 conv: a channel MLP on a channels-first (B, C, H, W) map."""

    def __init__(self, cin: int, hidden: int, cout: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(cin, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, cin if cout is None else cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, cout, H, W) via (B, hidden, H, W)


class PreNormBlock(nn.Module):
    """x + drop_path(mixer(norm1(x))), then x + drop_path(mlp(norm2(x))): the pre-norm (MetaFormer) block."""

    def __init__(self, norm1: nn.Module, mixer: nn.Module, norm2: nn.Module, mlp: nn.Module, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.mixer = norm1, mixer
        self.norm2, self.mlp = norm2, mlp
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))  # token mixing
        return x + self.drop_path(self.mlp(self.norm2(x)))  # channel mixing


def tokens_to_grid(x: torch.Tensor, side: int) -> torch.Tensor:
    """Lay a row-major token sequence out as a square map: (B, N, C) -> (B, C, side, side)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Flatten a map into a row-major token sequence: (B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def trunc_normal_parameter(*shape: int) -> nn.Parameter:
    """A parameter drawn from a normal of std 0.02 truncated to [-2, 2] (ViT's embeddings and tables)."""
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))
