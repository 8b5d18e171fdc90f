"""Shape and cost formulas shared by the operators."""

from __future__ import annotations

import math

from archetype.searchspace.operator import Operator, OperatorTypeError
from archetype.searchspace.types import Image, TensorType


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps H and W at stride 1 for an odd kernel."""
    return dilation * (kernel - 1) // 2


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output size of a convolution or pooling window along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def strided(x: Image, stride: int, name: str) -> tuple[int, int]:
    """H and W after a 'same' strided window: ceil(H / stride); refuses a map too small to shrink."""
    if stride > 1 and min(x.H, x.W) < stride:
        raise OperatorTypeError(f"operator '{name}' cannot downsample {x} by {stride}")
    return -(-x.H // stride), -(-x.W // stride)


def grid_side(op: Operator, x: TensorType) -> int:
    """The side of the square grid that the N tokens of ``x`` lay out; OperatorTypeError otherwise."""
    op.check_input(x)
    n = x.N  # type: ignore[attr-defined]
    side = math.isqrt(n)
    if side * side != n:
        raise OperatorTypeError(f"operator '{op.name}' needs a square token grid, got {x} (N={n} is not a square)")
    return side


def conv_params(cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of a k x k Conv2d (no bias unless asked)."""
    return cout * (cin // groups) * kernel * kernel + (cout if bias else 0)


def conv_macs(cin: int, cout: int, kernel: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Multiply-accumulates of a k x k Conv2d producing an h_out x w_out map."""
    return cout * h_out * w_out * (cin // groups) * kernel * kernel


def depthwise_params(channels: int, kernel: int, bias: bool = True) -> int:
    """Parameters of ``layers.depthwise_conv(channels, kernel)``."""
    return conv_params(channels, channels, kernel, groups=channels, bias=bias)


def depthwise_macs(channels: int, kernel: int, x: Image) -> int:
    """Multiply-accumulates of ``layers.depthwise_conv(channels, kernel)`` on the H x W map of ``x``."""
    return conv_macs(channels, channels, kernel, x.H, x.W, groups=channels)


def bn_params(channels: int) -> int:
    """Parameters of a BatchNorm or LayerNorm over ``channels``: a scale and a shift each."""
    return 2 * channels


def linear_params(cin: int, cout: int, bias: bool = True) -> int:
    """Parameters of ``nn.Linear(cin, cout)`` (or of a 1x1 conv with a bias)."""
    return cin * cout + (cout if bias else 0)


def mlp_params(cin: int, hidden: int, cout: int | None = None) -> int:
    """Parameters of ``layers.ChannelMlp`` or ``layers.ConvMlp``, cin -> hidden -> cout (cin by default)."""
    return linear_params(cin, hidden) + linear_params(hidden, cin if cout is None else cout)
