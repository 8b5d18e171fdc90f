"""Shared fixtures of the depth compression tests: a small MobileNetV2-like network from the operator library."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

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
