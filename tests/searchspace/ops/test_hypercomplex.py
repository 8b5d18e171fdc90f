"""Behaviour specific to the PHM convolution: its kernel is the sum of Kronecker products, a 1/n parameter saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archetype.errors import SpecError
from archetype.searchspace import Image, make_operator
from archetype.searchspace.operator import OperatorTypeError


@pytest.mark.parametrize("n", [2, 4])
def test_phm_kernel_is_the_sum_of_kronecker_products_and_is_the_conv(n: int) -> None:
    x = Image(8, 6, 6)
    torch.manual_seed(0)
    module = make_operator("phm_conv", {"width": 16, "n": n}).build(x).eval()
    want = sum(
        torch.kron(module.rules[i][:, :, None, None], module.filters[i]) for i in range(n)
    )  # kron over the channel axes; the (k, k) taps are 1 x 1 in the rule factor
    assert torch.allclose(module.kernel(), want, atol=1e-6)
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        conv = F.conv2d(inp, want, padding=1)
        assert torch.allclose(module(inp), module.act(module.bn(conv)), atol=1e-5)


def test_phm_conv_refuses_channels_it_cannot_split() -> None:
    with pytest.raises(SpecError, match=r"'phm_conv'.*'width'"):
        make_operator("phm_conv", {"width": 10, "n": 4})
    with pytest.raises(OperatorTypeError, match=r"Image\[6,8,8\]"):
        make_operator("phm_conv", {"width": 16, "n": 4}).output_type(Image(6, 8, 8))
    op, conv = make_operator("phm_conv", {"width": 32, "n": 4}), make_operator("conv_bn_act", {"width": 32})
    assert op.params(Image(16, 8, 8)) < conv.params(Image(16, 8, 8)) / 3
