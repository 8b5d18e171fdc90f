"""Shared fixtures of the depth compression tests: a small MobileNetV2-like network from the operator library."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from archetype.searchspace import Architecture

MOBILE = {
    "input": "Image[1,8,8]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 8, "kernel": 3}},
        {"slot": "block1", "op": "inverted_residual", "params": {"width": 12, "expand": 1}},
        {"slot": "block2", "op": "inverted_residual", "params": {"width": 16, "expand": 2, "stride": 2}},
        {"slot": "block3", "op": "inverted_residual", "params": {"width": 16, "expand": 2}},
        {"slot": "block4", "op": "inverted_residual", "params": {"width": 24, "expand": 1}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
    ],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mobile_arch() -> Architecture:
    """Stem, four inverted residuals (one with its skip), classifier head: 11 conv units for 8x8 digits."""
    return Architecture.from_json(MOBILE)


def _randomise_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters, then eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.3)
    return module.eval()


@pytest.fixture
def randomise_bn() -> Callable[..., nn.Module]:
    """Batch norms with statistics far from identity, so a wrong fold shows in the outputs."""
    return _randomise_bn
