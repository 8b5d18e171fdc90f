"""Behaviour specific to the KAN convolution: a sum of univariate functions of single inputs, with no cross terms."""

from __future__ import annotations

import torch

from archetype.searchspace import Image, make_operator


def test_kan_conv_is_additive_across_inputs() -> None:
    """f(x + d1 + d2) - f(x + d1) - f(x + d2) + f(x) = 0 when d1 and d2 touch different inputs (channel or tap)."""
    x = Image(4, 6, 6)
    torch.manual_seed(0)
    module = make_operator("kan_conv", {"width": 8, "grid": 6}).build(x).eval()
    inp = torch.randn(x.shape(1), dtype=torch.float64)
    module = module.double()
    d1, d2, d3 = torch.zeros_like(inp), torch.zeros_like(inp), torch.zeros_like(inp)
    d1[0, 0, 2, 2], d2[0, 3, 2, 2], d3[0, 0, 2, 3] = 0.7, -0.5, 0.4  # another channel; another tap
    with torch.no_grad():
        for other in (d2, d3):
            cross = module(inp + d1 + other) - module(inp + d1) - module(inp + other) + module(inp)
            assert cross.abs().max() < 1e-10
        coupled = module(inp + d1 + d1) - 2 * module(inp + d1) + module(inp)  # the same input: nonlinear in it
    assert coupled.abs().max() > 1e-3
