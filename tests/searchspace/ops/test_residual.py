"""Behaviour specific to the residual blocks: stochastic depth, dense concatenation, Res2Net's identity split."""

from __future__ import annotations

import pytest
import torch

from archetype.errors import SpecError
from archetype.searchspace import Image, make_operator
from archetype.searchspace.ops.layers import DropPath

DROP_PATH_BLOCKS = ("basic_block", "bottleneck", "wide_block", "res2net_block", "resnest_block")


def _seeded(name: str, hparams: dict, x: Image) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_operator(name, hparams).build(x)


@pytest.mark.parametrize("name", DROP_PATH_BLOCKS)
def test_drop_path_and_dropout_are_identity_in_eval(name: str) -> None:
    x = Image(16, 6, 6)
    extra = {"dropout": 0.3} if name == "wide_block" else {}
    plain = _seeded(name, {"width": 16}, x).eval()
    noisy = _seeded(name, {"width": 16, "drop_path": 0.5, **extra}, x).eval()
    noisy.load_state_dict(plain.state_dict())
    inp = torch.randn(x.shape(4))
    assert torch.equal(noisy(inp), plain(inp))


@pytest.mark.parametrize("name", DROP_PATH_BLOCKS)
def test_drop_path_zero_adds_no_module(name: str) -> None:
    module = make_operator(name, {"width": 16}).build(Image(16, 4, 4))
    assert not any(isinstance(m, DropPath) for m in module.modules())


def test_drop_path_drops_whole_samples_and_rescales_the_kept_ones() -> None:
    x, p = Image(8, 4, 4), 0.5
    block = _seeded("basic_block", {"width": 8, "drop_path": p}, x).train()
    inp = torch.randn(x.shape(32))
    torch.manual_seed(1)
    out = block(inp)
    branch = block.body(inp)  # same batch, so the same batch-norm statistics
    dropped = torch.relu(inp)
    kept = torch.relu(inp + branch / (1 - p))
    is_dropped = torch.isclose(out, dropped, atol=1e-6).flatten(1).all(1)
    is_kept = torch.isclose(out, kept, atol=1e-6).flatten(1).all(1)
    assert (is_dropped ^ is_kept).all()
    assert is_dropped.any() and is_kept.any()


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_drop_path_must_be_a_probability_below_one(value: float) -> None:
    with pytest.raises(SpecError, match=r"'bottleneck'.*'drop_path'"):
        make_operator("bottleneck", {"width": 16, "drop_path": value})


def test_dense_layer_appends_growth_channels_to_its_input() -> None:
    x = Image(5, 6, 6)
    op = make_operator("dense_layer", {"growth": 12})
    assert op.output_type(x) == Image(17, 6, 6)
    inp = torch.randn(x.shape(2))
    out = op.build(x).eval()(inp)
    assert torch.equal(out[:, :5], inp)


@pytest.mark.parametrize(("name", "hparams"), [
    ("bottleneck", {"width": 18}),
    ("res2net_block", {"width": 24, "scales": 4}),
    ("res2net_block", {"width": 16, "scales": 1}),
    ("resnest_block", {"width": 24, "radix": 4}),
])
def test_widths_that_cannot_be_split_are_refused(name: str, hparams: dict) -> None:
    with pytest.raises(SpecError, match=rf"'{name}'"):
        make_operator(name, hparams)


def test_res2net_first_group_passes_through_and_later_groups_chain() -> None:
    x = Image(8, 5, 5)
    hierarchical = _seeded("res2net_block", {"width": 32, "scales": 4}, x).eval().body[1]
    inp = torch.randn(2, 8, 5, 5)  # width/4 = 8 channels in 4 groups of 2
    out = hierarchical(inp)
    assert torch.equal(out[:, :2], inp[:, :2])
    moved = inp.clone()
    moved[:, 2:4] += 1.0  # the second group feeds every later group
    changed = (hierarchical(moved) != out).flatten(2).any(2).any(0)  # (channels,)
    assert not changed[:2].any() and changed[2:].all()
