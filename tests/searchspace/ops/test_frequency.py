"""Behaviour specific to the frequency mixers: an orthonormal Haar DWT, exact spectral filters."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from archetype.searchspace import Image, make_operator
from archetype.searchspace.operator import OperatorTypeError


def test_wavemix_haar_transform_is_orthonormal() -> None:
    x = Image(3, 6, 8)
    module = make_operator("wavemix_block", {}).build(x)
    inp = torch.randn(x.shape(2))
    bands = F.conv2d(inp, module.haar, stride=2, groups=x.C)  # (B, 4C, H/2, W/2)
    torch.testing.assert_close(bands.square().sum(), inp.square().sum())
    inverse = F.conv_transpose2d(bands, module.haar, stride=2, groups=x.C)
    torch.testing.assert_close(inverse, inp, atol=1e-5, rtol=1e-5)


def test_wavemix_refuses_an_odd_map() -> None:
    with pytest.raises(OperatorTypeError, match=r"Image\[8,7,8\]"):
        make_operator("wavemix_block", {}).output_type(Image(8, 7, 8))


@pytest.mark.parametrize("x", [Image(2, 8, 8), Image(2, 7, 5)])
def test_global_filter_of_ones_is_the_identity(x: Image) -> None:
    module = make_operator("global_filter", {}).build(x)
    with torch.no_grad():
        module.real.fill_(1.0)
        module.imag.zero_()
    inp = torch.randn(x.shape(2))
    torch.testing.assert_close(module(inp), inp, atol=1e-5, rtol=1e-5)


def test_global_filter_is_a_circular_convolution() -> None:
    x = Image(1, 6, 6)
    module = make_operator("global_filter", {}).build(x)
    kernel = torch.zeros(6, 6)
    kernel[0, 1] = 1.0  # shifts the map one column to the right, wrapping around
    with torch.no_grad():
        spectrum = torch.fft.rfft2(kernel)
        module.real.copy_(spectrum.real[None])
        module.imag.copy_(spectrum.imag[None])
    inp = torch.randn(x.shape(1))
    torch.testing.assert_close(module(inp), torch.roll(inp, 1, dims=3), atol=1e-5, rtol=1e-5)


def _plain_spam(x: Image, radii: int) -> torch.nn.Module:
    """The SPAM mixer with identity 1x1 convs, so that it computes x * context(x)."""
    spam = make_operator("spectral_pool_block", {"radii": radii}).build(x).mixer
    with torch.no_grad():
        for conv in (spam.value, spam.context, spam.proj):
            conv.weight.copy_(torch.eye(x.C)[:, :, None, None])
            conv.bias.zero_()
    return spam


def test_spectral_pooling_passes_the_mean_and_removes_the_highest_frequency() -> None:
    x = Image(2, 8, 8)
    spam = _plain_spam(x, radii=3)
    constant = torch.full(x.shape(1), 2.0)
    checkerboard = (-1.0) ** (torch.arange(8)[:, None] + torch.arange(8)[None, :]).float().expand(x.shape(1))
    with torch.no_grad():
        torch.testing.assert_close(spam(constant), constant * 2.0)
        torch.testing.assert_close(spam(checkerboard), torch.zeros(x.shape(1)), atol=1e-5, rtol=0)


def test_spectral_pooling_with_equal_low_and_high_weights_is_all_pass() -> None:
    x = Image(2, 6, 5)
    spam = _plain_spam(x, radii=2)
    with torch.no_grad():
        spam.high.copy_(spam.low)
        inp = torch.randn(x.shape(2))
        torch.testing.assert_close(spam(inp), inp * inp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["wavemix_block", "spectral_pool_block", "global_filter_block"])
def test_drop_path_is_identity_in_eval(name: str) -> None:
    x = Image(4, 6, 6)
    torch.manual_seed(0)
    plain = make_operator(name, {}).build(x).eval()
    noisy = make_operator(name, {"drop_path": 0.5}).build(x).eval()
    noisy.load_state_dict(plain.state_dict())
    inp = torch.randn(x.shape(4))
    with torch.no_grad():
        assert torch.equal(noisy(inp), plain(inp))
