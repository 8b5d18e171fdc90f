"""Mobile blocks: depthwise-separable convolutions, inverted residuals, squeeze-excitation and CondConv."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace.cost import bn_params, conv_macs, conv_params, linear_params, mlp_params, strided
from archetype.searchspace.nb201 import FBNET_CHOICES
from archetype.searchspace.operator import Operator, OperatorTypeError, operator
from archetype.searchspace.ops.checks import check_choice, check_odd, check_positive
from archetype.searchspace.ops.layers import ACTIVATIONS, ChannelMlp, conv_bn
from archetype.searchspace.types import Image, TensorType, Tokens


@operator(
    "dwsep_conv",
    family="mobile",
    paper="Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357",
)
@dataclass(frozen=True)
class DepthwiseSeparableConv(Operator):
    """Depthwise k x k then pointwise 1 x 1, each with batch norm and ReLU."""

    width: int
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32, 64), "kernel": (3, 5), "stride": (1, 2)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return nn.Sequential(
            conv_bn(x.C, x.C, self.kernel, self.stride, groups=x.C),  # (B, C, H/s, W/s)
            conv_bn(x.C, self.width, 1),  # (B, width, H/s, W/s)
        )

    def params(self, x: Image) -> int:
        return (
            conv_params(x.C, x.C, self.kernel, groups=x.C) + bn_params(x.C)
            + conv_params(x.C, self.width, 1) + bn_params(self.width)
        )

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        return conv_macs(x.C, x.C, self.kernel, y.H, y.W, groups=x.C) + conv_macs(x.C, self.width, 1, y.H, y.W)


class InvertedResidualModule(nn.Module):
    def __init__(self, body: nn.Module, residual: bool) -> None:
        super().__init__()
        self.body = body
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class _InvertedBottleneck(Operator):
    """Expand 1x1, depthwise k x k, optional squeeze-excitation, linear 1x1 projection; a skip when the shape is kept.

    Shared by inverted_residual and mbconv, which differ in their activation and squeeze-excitation.
    """

    width: int  # hyperparameters that each subclass declares as dataclass fields
    expand: int
    kernel: int
    stride: int
    activation: ClassVar[str]

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def _hidden(self, x: Image) -> int:
        return x.C * self.expand

    def _squeeze(self, x: Image) -> int:
        """Hidden width of the squeeze-excitation MLP; 0 for none."""
        return 0

    def build(self, x: Image) -> nn.Module:
        hidden, squeeze = self._hidden(x), self._squeeze(x)
        layers: list[nn.Module] = []
        if self.expand != 1:
            layers.append(conv_bn(x.C, hidden, 1, act=self.activation))  # (B, C*e, H, W)
        layers.append(conv_bn(hidden, hidden, self.kernel, self.stride, groups=hidden, act=self.activation))
        if squeeze:
            layers.append(_SqueezeExcite(hidden, squeeze, ACTIVATIONS[self.activation]))  # (B, C*e, H/s, W/s)
        layers.append(conv_bn(hidden, self.width, 1, act=None))  # (B, width, H/s, W/s)
        return InvertedResidualModule(nn.Sequential(*layers), self.output_type(x) == x)

    def params(self, x: Image) -> int:
        hidden, squeeze = self._hidden(x), self._squeeze(x)
        total = conv_params(hidden, hidden, self.kernel, groups=hidden) + bn_params(hidden)
        total += mlp_params(hidden, squeeze) if squeeze else 0
        total += conv_params(hidden, self.width, 1) + bn_params(self.width)
        if self.expand != 1:
            total += conv_params(x.C, hidden, 1) + bn_params(hidden)
        return total

    def macs(self, x: Image) -> int:
        hidden, y = self._hidden(x), self.output_type(x)
        total = conv_macs(hidden, hidden, self.kernel, y.H, y.W, groups=hidden)
        total += 2 * hidden * self._squeeze(x)
        total += conv_macs(hidden, self.width, 1, y.H, y.W)
        if self.expand != 1:
            total += conv_macs(x.C, hidden, 1, x.H, x.W)
        return total


@operator(
    "inverted_residual",
    family="mobile",
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381",
)
@dataclass(frozen=True)
class InvertedResidual(_InvertedBottleneck):
    """Expand 1x1, depthwise k x k, linear 1x1 projection; a skip when the shape is kept."""

    width: int
    expand: int = 6
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32, 64), "expand": (1, 3, 6), "kernel": (3, 5), "stride": (1, 2)}
    activation: ClassVar[str] = "relu6"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")
        check_positive(self, "expand")


class _SqueezeExcite(nn.Module):
    """Gate each channel by a sigmoid of an MLP on the globally pooled features."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module], tokens: bool = False) -> None:
        super().__init__()
        self.mlp = ChannelMlp(channels, squeeze, act=act)  # reduce, act, expand
        self.tokens = tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=1) if self.tokens else x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(self.mlp(pooled))  # (B, C)
        return x * (gate[:, None, :] if self.tokens else gate[:, :, None, None])


@operator(
    "se_block",
    family="mobile",
    paper="Squeeze-and-Excitation Networks, arXiv:1709.01507",
)
@dataclass(frozen=True)
class SqueezeExcitation(Operator):
    """Squeeze-and-excitation: channels gated by an MLP (reduction ratio r) on globally pooled features."""

    reduction: int = 16
    accepts: ClassVar = (Image, Tokens)
    domain: ClassVar = {"reduction": (4, 16)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "reduction")

    def _channels(self, x: TensorType) -> int:
        return x.C  # type: ignore[attr-defined]

    def _squeeze(self, x: TensorType) -> int:
        return max(1, self._channels(x) // self.reduction)

    def output_type(self, x: TensorType) -> TensorType:
        self.check_input(x)
        return x

    def build(self, x: TensorType) -> nn.Module:
        return _SqueezeExcite(self._channels(x), self._squeeze(x), nn.ReLU, tokens=isinstance(x, Tokens))

    def params(self, x: TensorType) -> int:
        return mlp_params(self._channels(x), self._squeeze(x))

    def macs(self, x: TensorType) -> int:
        return 2 * self._channels(x) * self._squeeze(x)


@operator(
    "mbconv",
    family="mobile",
    paper="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, arXiv:1905.11946",
)
@dataclass(frozen=True)
class MBConv(_InvertedBottleneck):
    """Inverted residual with SiLU and squeeze-excitation (a quarter of the input channels); skip when shape kept."""

    width: int
    expand: int = 6
    kernel: int = 3
    stride: int = 1
    domain: ClassVar = {"width": (16, 32, 64), "expand": (1, 4, 6), "kernel": (3, 5), "stride": (1, 2)}
    activation: ClassVar[str] = "silu"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")
        check_positive(self, "width", "expand", "stride")

    def _squeeze(self, x: Image) -> int:
        return max(1, x.C // 4)


class _CondConvModule(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, experts: int, act: str) -> None:
        super().__init__()
        self.cout, self.kernel, self.stride = cout, kernel, stride
        self.route = nn.Linear(cin, experts)
        self.experts = nn.Parameter(torch.empty(experts, cout, cin, kernel, kernel))
        for e in range(experts):
            nn.init.kaiming_uniform_(self.experts[e], a=math.sqrt(5))  # as nn.Conv2d initialises its kernel
        self.bn = nn.BatchNorm2d(cout)
        self.act = ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        routing = torch.sigmoid(self.route(x.mean(dim=(2, 3))))  # (B, E)
        kernels = routing @ self.experts.flatten(1)  # (B, cout*C*k*k): one mixed kernel per sample
        kernels = kernels.reshape(b * self.cout, c, self.kernel, self.kernel)
        y = F.conv2d(
            x.reshape(1, b * c, h, w), kernels, stride=self.stride, padding=(self.kernel - 1) // 2, groups=b
        )  # (1, B*cout, H/s, W/s): sample i convolved with its own kernel
        return self.act(self.bn(y.reshape(b, self.cout, y.shape[-2], y.shape[-1])))


@operator(
    "condconv",
    family="mobile",
    paper="CondConv: Conditionally Parameterized Convolutions for Efficient Inference, arXiv:1904.04971",
)
@dataclass(frozen=True)
class CondConv(Operator):
    """Conv-bn-act whose kernel is a per-sample mixture of expert kernels routed by sigmoid(linear(pooled input))."""

    width: int
    kernel: int = 3
    stride: int = 1
    experts: int = 4
    act: str = "relu"
    domain: ClassVar = {"width": (16, 32), "kernel": (3, 5), "stride": (1, 2), "experts": (4, 8)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_odd(self, "kernel")
        check_positive(self, "width", "stride", "experts")
        check_choice(self, "act", ACTIVATIONS)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        return Image(self.width, h, w)

    def build(self, x: Image) -> nn.Module:
        return _CondConvModule(x.C, self.width, self.kernel, self.stride, self.experts, self.act)

    def params(self, x: Image) -> int:
        route = linear_params(x.C, self.experts)
        return route + self.experts * conv_params(x.C, self.width, self.kernel) + bn_params(self.width)

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        mixing = self.experts * conv_params(x.C, self.width, self.kernel)  # routing weights times expert kernels
        return x.C * self.experts + mixing + conv_macs(x.C, self.width, self.kernel, y.H, y.W)


class _ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _fbnet_parts(choice: str) -> tuple[int, int, int]:
    """(kernel, expansion, pointwise groups) of an FBNet layer choice such as ``k5_e1_g2``."""
    parts = choice.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]) if len(parts) > 2 else 1


@operator(
    "fbnet_block",
    family="mobile",
    paper="FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural Architecture Search, "
    "arXiv:1812.03443",
)
@dataclass(frozen=True)
class FBNetBlock(Operator):
    """One FBNet layer: grouped 1x1 expansion (channel shuffle for 2 groups), depthwise k x k, grouped 1x1
    projection, a residual when the shape is kept; ``skip`` is an identity, or a strided 1x1 projection."""

    width: int
    stride: int = 1
    choice: str = "k3_e1"
    domain: ClassVar = {"width": (16, 32), "stride": (1, 2), "choice": FBNET_CHOICES}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "width", "stride")
        check_choice(self, "choice", FBNET_CHOICES)

    def output_type(self, x: TensorType) -> Image:
        self.check_input(x)
        h, w = strided(x, self.stride, self.name)
        y = Image(self.width, h, w)
        groups = _fbnet_parts(self.choice)[2] if self.choice != "skip" else 1
        if groups > 1 and (x.C % groups or self.width % groups):
            raise OperatorTypeError(f"operator '{self.name}' ({self.choice}) needs channels divisible by {groups}, "
                                    f"got {x} -> {y}")
        return y

    def _skip_is_identity(self, x: Image) -> bool:
        return self.output_type(x) == x

    def build(self, x: Image) -> nn.Module:
        if self.choice == "skip":
            return nn.Identity() if self._skip_is_identity(x) else conv_bn(x.C, self.width, 1, self.stride, act=None)
        kernel, expand, groups = _fbnet_parts(self.choice)
        hidden = x.C * expand
        layers: list[nn.Module] = [conv_bn(x.C, hidden, 1, groups=groups)]  # (B, C*e, H, W)
        if groups > 1:
            layers.append(_ChannelShuffle(groups))
        layers += [
            conv_bn(hidden, hidden, kernel, self.stride, groups=hidden),  # (B, C*e, H/s, W/s)
            conv_bn(hidden, self.width, 1, groups=groups, act=None),  # (B, width, H/s, W/s)
        ]
        return InvertedResidualModule(nn.Sequential(*layers), self.output_type(x) == x)

    def params(self, x: Image) -> int:
        if self.choice == "skip":
            return 0 if self._skip_is_identity(x) else conv_params(x.C, self.width, 1) + bn_params(self.width)
        kernel, expand, groups = _fbnet_parts(self.choice)
        hidden = x.C * expand
        return (conv_params(x.C, hidden, 1, groups=groups) + bn_params(hidden)
                + conv_params(hidden, hidden, kernel, groups=hidden) + bn_params(hidden)
                + conv_params(hidden, self.width, 1, groups=groups) + bn_params(self.width))

    def macs(self, x: Image) -> int:
        y = self.output_type(x)
        if self.choice == "skip":
            return 0 if self._skip_is_identity(x) else conv_macs(x.C, self.width, 1, y.H, y.W)
        kernel, expand, groups = _fbnet_parts(self.choice)
        hidden = x.C * expand
        return (conv_macs(x.C, hidden, 1, x.H, x.W, groups=groups)
                + conv_macs(hidden, hidden, kernel, y.H, y.W, groups=hidden)
                + conv_macs(hidden, self.width, 1, y.H, y.W, groups=groups))
