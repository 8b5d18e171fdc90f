"""Conv chains and merging: a merged convolution equals the activation-removed computation it replaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archetype.compress.conv_chain import (
    AffineConv,
    PaddedSpan,
    UnsupportedNetworkError,
    chain_network,
    extract_chain,
    merge_network,
)
from archetype.searchspace import Architecture
from archetype.searchspace.ops.mobile import InvertedResidualModule
from archetype.searchspace.ops.residual import ResidualModule

ATOL = 1e-4


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False, **kw) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=kw.pop("padding", (k - 1) // 2), groups=groups, bias=bias, **kw)


def _sequential_reference(units: list[nn.Module], x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """Convs and norms applied in turn to x zero-padded once, each conv unpadded: the definition of a merge."""
    x = nn.functional.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    for m in units:
        if isinstance(m, nn.Conv2d):
            x = nn.functional.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        else:
            x = m(x)
    return x


CASES = {
    "conv+conv": lambda: [_conv(3, 8, 3), _conv(8, 5, 3)],
    "conv+bn+conv+bn": lambda: [_conv(3, 8, 3), nn.BatchNorm2d(8), _conv(8, 6, 5), nn.BatchNorm2d(6)],
    "dw+dw": lambda: [_conv(6, 6, 3, groups=6), nn.BatchNorm2d(6), _conv(6, 6, 5, groups=6, bias=True)],
    "1x1+dw+1x1": lambda: [_conv(4, 12, 1), nn.BatchNorm2d(12), _conv(12, 12, 3, groups=12), nn.BatchNorm2d(12),
                          _conv(12, 5, 1)],
    "grouped": lambda: [_conv(8, 8, 3, groups=4, bias=True), _conv(8, 12, 3, groups=2)],
    "strided first": lambda: [_conv(3, 6, 3, stride=2), nn.BatchNorm2d(6), _conv(6, 7, 3, bias=True)],
    "strided both": lambda: [_conv(3, 6, 3, stride=2), _conv(6, 4, 3, stride=2, bias=True)],
    "dilated": lambda: [_conv(3, 5, 3, dilation=2, padding=2), _conv(5, 4, 3)],
    "valid padding": lambda: [_conv(3, 5, 3, padding=0), _conv(5, 4, 3, padding=0)],
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("size", [(9, 9), (8, 11)])
def test_merged_conv_equals_the_convs_on_an_input_padded_once(name: str, size: tuple[int, int], randomise_bn) -> None:
    torch.manual_seed(0)
    layers = randomise_bn(nn.Sequential(*CASES[name]()))
    chain = extract_chain(layers, (layers[0].in_channels, *size))
    span = PaddedSpan(chain.units).eval()
    merged = span.merged()
    x = torch.randn(2, layers[0].in_channels, *size)
    with torch.no_grad():
        expected = _sequential_reference(list(layers), x, span.padding)
        assert torch.allclose(span(x), expected, atol=ATOL)
        assert torch.allclose(merged(x), expected, atol=ATOL)
    g = chain.geometry((0, chain.layers))
    assert (merged.kernel_size, merged.stride, merged.padding) == (g.kernel, g.stride, g.padding)
    assert merged.groups == g.groups


def test_kernel_sizes_add_strides_multiply_and_depthwise_stays_depthwise() -> None:
    dw = nn.Sequential(_conv(6, 6, 3, groups=6), _conv(6, 6, 5, stride=2, groups=6))
    g = extract_chain(dw, (6, 10, 10)).geometry((0, 2))
    assert (g.kernel, g.stride, g.padding, g.groups) == ((7, 7), (2, 2), (3, 3), 6)
    mixed = nn.Sequential(_conv(6, 6, 3, groups=6), _conv(6, 4, 1))
    assert extract_chain(mixed, (6, 10, 10)).geometry((0, 2)).groups == 1
    strided = nn.Sequential(_conv(3, 4, 3, stride=2), _conv(4, 4, 3))
    g = extract_chain(strided, (3, 10, 10)).geometry((0, 2))
    assert (g.kernel, g.stride, g.padding) == ((7, 7), (2, 2), (3, 3))  # the second kernel is read at stride 2


def test_single_conv_block_is_the_original_layer(randomise_bn) -> None:
    torch.manual_seed(1)
    layers = randomise_bn(nn.Sequential(_conv(3, 5, 3, stride=2), nn.BatchNorm2d(5)))
    merged = PaddedSpan(extract_chain(layers, (3, 7, 7)).units).merged()
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        assert torch.allclose(merged(x), layers(x), atol=ATOL)


def test_residual_inside_a_block_folds_into_the_centre_tap(randomise_bn) -> None:
    torch.manual_seed(2)
    body = nn.Sequential(_conv(6, 12, 1), nn.BatchNorm2d(12), _conv(12, 12, 3, groups=12), nn.BatchNorm2d(12),
                         _conv(12, 6, 1), nn.BatchNorm2d(6))
    model = randomise_bn(nn.Sequential(InvertedResidualModule(body, True)))
    chain = extract_chain(model, (6, 7, 7))
    assert chain.residuals == [(0, 3)]
    span = PaddedSpan(chain.units, chain.inner_residuals((0, 3))).eval()
    merged = span.merged()
    assert merged.kernel_size == (3, 3) and merged.groups == 1
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        assert torch.allclose(merged(x), span(x), atol=ATOL)
        inner = (..., slice(1, -1), slice(1, -1))  # away from the border, padding once changes nothing
        assert torch.allclose(merged(x)[inner], model(x)[inner], atol=ATOL)
        assert not torch.allclose(span.merged().bias, torch.zeros(6))
    identity_only = AffineConv.identity(6).plus(AffineConv.identity(6))
    assert torch.equal(identity_only.weight, torch.full((6, 1, 1, 1), 2.0, dtype=torch.float64))


def test_residual_around_3x3_convs_with_a_nested_residual(randomise_bn) -> None:
    torch.manual_seed(3)
    inner = ResidualModule(nn.Sequential(_conv(4, 4, 3), nn.BatchNorm2d(4)), nn.Identity(), 0.0)
    inner.act = nn.Identity()
    model = randomise_bn(nn.Sequential(_conv(4, 4, 3, groups=4), nn.BatchNorm2d(4), inner, _conv(4, 4, 3)))
    chain = extract_chain(model, (4, 6, 6))
    assert chain.residuals == [(1, 2)]
    span = PaddedSpan(chain.units, chain.inner_residuals((0, 3))).eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        ph, pw = span.padding
        padded = nn.functional.pad(x, (pw, pw, ph, ph))
        a = model[1](nn.functional.conv2d(padded, model[0].weight, None, 1, 0, 1, 4))
        b = inner.body[1](nn.functional.conv2d(a, inner.body[0].weight, None, 1, 0)) + a[..., 1:-1, 1:-1]
        expected = nn.functional.conv2d(b, model[3].weight, None, 1, 0)
        assert torch.allclose(span(x), expected, atol=ATOL)
        assert torch.allclose(span.merged()(x), expected, atol=ATOL)


def test_chain_of_singletons_equals_the_original_network(mobile_arch: Architecture, randomise_bn) -> None:
    torch.manual_seed(4)
    model = randomise_bn(mobile_arch.build())
    chain = extract_chain(model)
    singles = [(k - 1, k) for k in range(1, chain.layers + 1)]
    network = chain_network(chain, singles).eval()
    x = torch.randn(3, *chain.input_shape)
    with torch.no_grad():
        assert torch.allclose(network(x), model(x), atol=ATOL)
        assert torch.allclose(merge_network(network)(x), model(x), atol=ATOL)


def test_mobilenet_like_chain_structure(mobile_arch: Architecture) -> None:
    chain = extract_chain(mobile_arch.build())
    # stem; block1 (expand 1: dw, project); block2 (expand, dw s2, project); block3 residual; block4 (expand 1)
    assert chain.layers == 1 + 2 + 3 + 3 + 2
    assert chain.residuals == [(6, 9)]
    assert chain.activation_boundaries() == [1, 2, 4, 5, 7, 8, 10]
    assert not chain.mergeable((5, 8))  # would cut the residual (6, 9) in two
    assert chain.mergeable((6, 9)) and chain.mergeable((5, 9)) and chain.mergeable((9, 11))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Conv2d(4, 4, 1)), "'2'"),
        (nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)), "before any convolution"),
        (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")), "padding mode"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ReLU()), "second activation"),
        (nn.Linear(3, 4), "'linear' .* before any convolution"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 4), nn.Unflatten(1, (4, 1, 1)),
                       nn.Conv2d(4, 4, 1)), "'4' is a convolution after the head begins at '1'"),
    ],
)
def test_unsupported_networks_are_refused_naming_the_module(model: nn.Module, message: str) -> None:
    with pytest.raises(UnsupportedNetworkError, match=message):
        extract_chain(model, (3, 8, 8))


def test_squeeze_excitation_is_refused_by_name() -> None:
    arch = Architecture.from_json({
        "input": "Image[1,8,8]",
        "slots": [
            {"slot": "stem", "op": "conv_bn_act", "params": {"width": 8}},
            {"slot": "block", "op": "mbconv", "params": {"width": 8, "expand": 2}},
            {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
        ],
    })
    with pytest.raises(UnsupportedNetworkError, match="block"):
        extract_chain(arch.build())
