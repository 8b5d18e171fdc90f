"""Shared fixtures of the worker tests: a small conv-small architecture for digits and a quick protocol."""

from __future__ import annotations

import pytest

from archetype.searchspace import Architecture, Image, get_space
from archetype.worker.measure import MeasureProtocol

QUICK = MeasureProtocol(warmup=5, blocks=3, min_block_ms=2.0, retries=0)
"""A short latency protocol: tests check that targets measure, not what they measure."""

TINY = {
    "input": "Image[1,8,8]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {"slot": "stage1.block1", "op": "conv_bn_act", "params": {"width": 24, "kernel": 3, "stride": 1}},
        {"slot": "stage1.down", "op": "pool", "params": {"kind": "max"}},
        {"slot": "stage2.block1", "op": "conv_bn_act", "params": {"width": 32, "kernel": 3, "stride": 1}},
        {"slot": "stage2.block2", "op": "identity", "params": {}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
    ],
}


@pytest.fixture(scope="module")
def tiny_arch() -> Architecture:
    """A three-conv network of conv-small for 8x8 digits, validated against the space."""
    space = get_space("conv-small", Image(1, 8, 8), 10)
    return space.validate(Architecture.from_json(TINY, space))
