"""Behaviour specific to the mobile blocks: MBConv's skip, squeeze-excitation gates, CondConv's per-sample kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archetype.searchspace import Image, Tokens, make_operator


def _seeded(name: str, hparams: dict, x) -> nn.Module:
    torch.manual_seed(0)
    return make_operator(name, hparams).build(x).eval()


@pytest.mark.parametrize(
    ("hparams", "skips"), [({"width": 8}, True), ({"width": 16}, False), ({"width": 8, "stride": 2}, False)]
)
def test_mbconv_skips_exactly_when_the_shape_is_kept(hparams: dict, skips: bool) -> None:
    x = Image(8, 8, 8)
    module = _seeded("mbconv", hparams, x)
    projection_bn = module.body[-1][1]
    nn.init.zeros_(projection_bn.weight)  # the body now outputs zeros: a skip passes the input through
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        out = module(inp)
    assert torch.equal(out, inp if skips else torch.zeros_like(out))


@pytest.mark.parametrize("x", [Image(8, 5, 6), Tokens(7, 8)])
def test_se_block_scales_each_channel_of_each_sample_by_one_gate_in_0_1(x) -> None:
    module = _seeded("se_block", {"reduction": 4}, x)
    inp = torch.rand(x.shape(2)) + 0.5
    with torch.no_grad():
        ratio = module(inp) / inp
    per_channel = ratio.flatten(2) if isinstance(x, Image) else ratio.transpose(1, 2)  # (B, C, positions)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-6)
    assert ((ratio > 0) & (ratio < 1)).all()
    assert not torch.allclose(per_channel[0, :, 0], per_channel[1, :, 0])  # the gate depends on the sample


def test_condconv_convolves_each_sample_with_its_own_routed_mixture_of_experts() -> None:
    x = Image(5, 7, 7)
    module = _seeded("condconv", {"width": 6, "kernel": 3, "stride": 2, "experts": 3}, x)
    inp = torch.randn(x.shape(3))
    with torch.no_grad():
        out = module(inp)
        for i in range(3):
            sample = inp[i : i + 1]
            routing = torch.sigmoid(module.route(sample.mean(dim=(2, 3))))[0]  # (E,)
            kernel = (routing[:, None, None, None, None] * module.experts).sum(0)
            want = module.act(module.bn(F.conv2d(sample, kernel, stride=2, padding=1)))
            assert torch.allclose(out[i : i + 1], want, atol=1e-5)
            assert torch.allclose(module(sample), want, atol=1e-5)  # the batch does not mix samples
