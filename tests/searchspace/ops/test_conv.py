"""Behaviour specific to the plain convolutions: 1x1 locality, dilation taps, space-to-depth."""

from __future__ import annotations

import pytest
import torch

from archetype.searchspace import Image, make_operator


def _seeded(name: str, hparams: dict, x: Image) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_operator(name, hparams).build(x).eval()


@pytest.mark.parametrize("x", [Image(4, 8, 8), Image(3, 7, 9), Image(5, 2, 3)])
@pytest.mark.parametrize("stride", [1, 2])
def test_dilated_conv_has_the_shape_map_of_conv_bn_act(x: Image, stride: int) -> None:
    conv = make_operator("conv_bn_act", {"width": 16, "stride": stride})
    for dilation in (2, 3):
        dilated = make_operator("dilated_conv", {"width": 16, "dilation": dilation, "stride": stride})
        assert dilated.output_type(x) == conv.output_type(x)


def test_dilated_conv_sees_only_taps_a_dilation_apart() -> None:
    x = Image(2, 9, 9)
    module = _seeded("dilated_conv", {"width": 4, "dilation": 2}, x)
    inp = torch.randn(x.shape(1))
    base = module(inp)[..., 4, 4]
    near, tap = inp.clone(), inp.clone()
    near[..., 5, 5] += 1.0  # one pixel away from the centre: between taps
    tap[..., 6, 6] += 1.0  # two pixels away: a tap
    assert torch.equal(module(near)[..., 4, 4], base)
    assert not torch.equal(module(tap)[..., 4, 4], base)


def test_pointwise_conv_mixes_channels_at_each_pixel_only() -> None:
    x = Image(3, 5, 5)
    module = _seeded("pointwise_conv", {"width": 8}, x)
    inp = torch.randn(x.shape(1))
    moved = inp.clone()
    moved[..., 2, 2] += 1.0
    changed = (module(moved) != module(inp)).any(dim=1)[0]  # (H, W)
    assert changed[2, 2] and changed.sum() == 1


@pytest.mark.parametrize(("x", "want"), [(Image(3, 8, 8), Image(16, 4, 4)), (Image(3, 7, 9), Image(16, 4, 5))])
def test_downsamplers_halve_rounding_up_like_pool(x: Image, want: Image) -> None:
    pool = make_operator("pool", {}).output_type(x)
    for name in ("strided_conv", "spd_conv"):
        op = make_operator(name, {"width": 16})
        assert op.output_type(x) == want
        assert (op.output_type(x).H, op.output_type(x).W) == (pool.H, pool.W)
        assert tuple(op.build(x)(torch.randn(x.shape(2))).shape) == want.shape(2)


def test_spd_conv_space_to_depth_keeps_every_pixel() -> None:
    x = Image(3, 6, 4)
    space_to_depth = _seeded("spd_conv", {"width": 8}, x)[0]
    inp = torch.randn(x.shape(2))
    out = space_to_depth(inp)  # (B, 4C, H/2, W/2)
    assert out.shape == (2, 12, 3, 2)
    assert torch.equal(out[:, :3], inp[..., ::2, ::2]) and torch.equal(out[:, 9:], inp[..., 1::2, 1::2])
    assert torch.equal(out.flatten(1).sort().values, inp.flatten(1).sort().values)
