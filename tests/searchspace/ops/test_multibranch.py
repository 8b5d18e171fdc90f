"""Behaviour specific to the multi-branch blocks: Inception's channel split, InceptionNeXt's identity branch."""

from __future__ import annotations

import re

import pytest
import torch

from archetype.errors import SpecError
from archetype.searchspace import Image, make_operator
from archetype.searchspace.operator import OperatorTypeError


def test_inception_block_concatenates_its_branches_to_width() -> None:
    x = Image(6, 5, 7)
    module = make_operator("inception_block", {"width": 24}).build(x).eval()
    inp = torch.randn(x.shape(2))
    branches = [module.branch1(inp), module.branch3(inp), module.branch5(inp), module.branch_pool(inp)]
    assert [b.shape[1] for b in branches] == [6, 12, 3, 3]
    assert torch.equal(module(inp), torch.cat(branches, dim=1))


def test_inception_block_width_must_be_a_multiple_of_eight() -> None:
    with pytest.raises(SpecError, match=r"'inception_block'.*'width'"):
        make_operator("inception_block", {"width": 20})


def test_inceptionnext_mixer_leaves_the_identity_channels_untouched() -> None:
    x = Image(16, 6, 6)
    module = make_operator("inceptionnext_block", {}).build(x).eval()
    inp = torch.randn(x.shape(2))
    mixed = module.mixer(inp)
    assert torch.equal(mixed[:, :10], inp[:, :10])  # 16 - 3 * (16 // 8) identity channels
    assert not torch.equal(mixed[:, 10:], inp[:, 10:])


def test_inceptionnext_band_kernels_reach_along_one_axis() -> None:
    x = Image(8, 11, 11)
    mixer = make_operator("inceptionnext_block", {"band_kernel": 7}).build(x).eval().mixer
    inp = torch.zeros(x.shape(1))
    inp[..., 5, 5] = 1.0  # an impulse at the centre
    out = mixer(inp) - mixer(torch.zeros_like(inp))  # remove the biases
    band_w, band_h = out[0, 6].abs() > 0, out[0, 7].abs() > 0  # (H, W): one channel of each band branch
    assert band_w[5].sum() == 7 and band_w.sum() == 7
    assert band_h[:, 5].sum() == 7 and band_h.sum() == 7


def test_inceptionnext_refuses_fewer_than_eight_channels() -> None:
    with pytest.raises(OperatorTypeError, match=rf"'inceptionnext_block'.*{re.escape(str(Image(4, 8, 8)))}"):
        make_operator("inceptionnext_block", {}).output_type(Image(4, 8, 8))
