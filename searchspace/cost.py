"""Shape and cost formulas shared by the operators."""

from __future__ import annotations

from archetype.searchspace.operator import OperatorTypeError
from archetype.searchspace.types import Image


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps H and W at stride 1 for an odd kernel."""
    return dilation * (kernel - 1) // 2


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def strided(x: Image, stride: int, name: str) -> tuple[int, int]:
    """H and W after a 'same' strided window: ceil(H / stride); refuses a map too small to shrink."""
    if stride > 1 and min(x.H, x.W) < stride:
        raise OperatorTypeError(f"operator '{name}' cannot downsample {x} by {stride}")
    return -(-x.H // stride), -(-x.W // stride)


def conv_params(cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = False) -> int:
    return cout * (cin // groups) * kernel * kernel + (cout if bias else 0)


def conv_macs(cin: int, cout: int, kernel: int, h_out: int, w_out: int, groups: int = 1) -> int:
    return cout * h_out * w_out * (cin // groups) * kernel * kernel


def bn_params(channels: int) -> int:
    return 2 * channels
