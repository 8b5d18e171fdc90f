"""Behaviour specific to the large-kernel blocks: RepLK re-parameterisation, drop path, GRN, type refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archetype.searchspace import Image, make_operator
from archetype.searchspace.operator import OperatorTypeError

BLOCKS_WITH_DROP_PATH = ("convnext_block", "convnext_v2_block", "replk_block", "gnconv_block", "moga_block")


def _randomise_batch_norms(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.copy_(torch.randn(t.shape, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize(("kernel", "small_kernel"), [(7, 3), (13, 5)])
def test_replk_reparameterised_block_computes_the_same_in_eval_mode(kernel: int, small_kernel: int) -> None:
    x = Image(6, 9, 9)
    torch.manual_seed(0)
    module = make_operator("replk_block", {"kernel": kernel, "small_kernel": small_kernel}).build(x).eval()
    _randomise_batch_norms(module)
    inp = torch.randn(x.shape(2))
    with torch.no_grad():
        want = module(inp)
        convs_before = sum(isinstance(m, nn.Conv2d) for m in module.modules())
        module.reparameterize()
        got = module(inp)
    assert torch.allclose(got, want, atol=1e-5)
    assert sum(isinstance(m, nn.Conv2d) for m in module.modules()) == convs_before - 1
    assert module.large_kernel.fused.kernel_size == (kernel, kernel)


@pytest.mark.parametrize("name", BLOCKS_WITH_DROP_PATH)
def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training(name: str) -> None:
    x = Image(8, 6, 6)
    torch.manual_seed(0)
    plain = make_operator(name, {}).build(x)
    torch.manual_seed(0)
    dropped = make_operator(name, {"drop_path": 0.5}).build(x)
    inp = torch.randn(x.shape(32))
    with torch.no_grad():
        assert torch.equal(plain.eval()(inp), dropped.eval()(inp))
        if name == "replk_block":  # one residual branch: a dropped sample comes out as it went in
            out = dropped.train()(inp)
            kept = [not torch.equal(o, i) for o, i in zip(out, inp, strict=True)]
            assert 0 < sum(kept) < len(kept)


def test_convnext_v2_global_response_norm_starts_as_identity_and_then_normalises_across_channels() -> None:
    x = Image(4, 5, 5)
    module = make_operator("convnext_v2_block", {}).build(x)
    grn = module.mlp.norm
    y = torch.randn(2, 5, 5, 16)  # channels last, the MLP's hidden width
    assert torch.equal(grn(y), y)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
    norms = y.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    assert torch.allclose(grn(y), y + y * norms / (norms.mean(dim=-1, keepdim=True) + 1e-6), atol=1e-6)


@pytest.mark.parametrize(("order", "channels", "ok"), [(2, 6, True), (3, 6, False), (3, 12, True), (2, 3, False)])
def test_gnconv_needs_channels_divisible_by_two_to_the_order_minus_one(order: int, channels: int, ok: bool) -> None:
    op, x = make_operator("gnconv_block", {"order": order}), Image(channels, 4, 4)
    if ok:
        assert op.output_type(x) == x
    else:
        with pytest.raises(OperatorTypeError, match=rf"'gnconv_block'.*Image\[{channels},4,4\]"):
            op.output_type(x)


def test_moga_needs_three_channels_to_split() -> None:
    with pytest.raises(OperatorTypeError, match=r"'moga_block'.*Image\[2,8,8\]"):
        make_operator("moga_block", {}).output_type(Image(2, 8, 8))
