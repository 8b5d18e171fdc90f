"""Behaviour specific to the attention operators: grids, windows, pooling, gates, class attention."""

from __future__ import annotations

import re

import pytest
import torch

from archetype.errors import SpecError
from archetype.searchspace import Image, Tokens, make_operator
from archetype.searchspace.operator import OperatorTypeError

GRID_BLOCKS = ("gpsa_block", "xca_block", "window_attention_block", "pooling_attention_block", "linear_attention_block")


def _seeded(name: str, hparams: dict, x) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_operator(name, hparams).build(x).eval()


@pytest.mark.parametrize("name", GRID_BLOCKS)
def test_grid_blocks_refuse_a_non_square_token_count_and_name_the_type(name: str) -> None:
    with pytest.raises(OperatorTypeError, match=rf"'{name}'.*Tokens\[10,32\]"):
        make_operator(name, {}).output_type(Tokens(10, 32))


@pytest.mark.parametrize("name", [*GRID_BLOCKS, "mhsa_block", "class_token_head", "lambda_layer"])
def test_heads_must_divide_the_channels(name: str) -> None:
    hparams = {"heads": 4, **({"classes": 10} if name == "class_token_head" else {})}
    x = Image(30, 4, 4) if name == "lambda_layer" else Tokens(16, 30)
    with pytest.raises(OperatorTypeError, match=rf"'{name}'.*{re.escape(str(x))}"):
        make_operator(name, hparams).output_type(x)


def test_window_attention_refuses_a_grid_side_not_divisible_by_the_window() -> None:
    with pytest.raises(OperatorTypeError, match=r"window 4.*Tokens\[36,16\]"):
        make_operator("window_attention_block", {"window": 4}).output_type(Tokens(36, 16))


def test_one_window_over_the_whole_grid_is_global_self_attention() -> None:
    x = Tokens(16, 32)
    window = _seeded("window_attention_block", {"window": 4, "heads": 2}, x)
    glob = make_operator("mhsa_block", {"heads": 2}).build(x).eval()
    glob.load_state_dict({k.replace("mixer.attn.", "mixer."): v for k, v in window.state_dict().items()})
    inp = torch.randn(x.shape(2))
    torch.testing.assert_close(window(inp), glob(inp))


def test_window_attention_is_local_to_its_window() -> None:
    x = Tokens(16, 8)  # a 4x4 grid in four 2x2 windows
    block = _seeded("window_attention_block", {"window": 2}, x)
    inp = torch.randn(x.shape(1))
    moved = inp.clone()
    moved[0, 0] += torch.randn(8)  # token (0, 0): the top-left window holds tokens 0, 1, 4, 5
    changed = (block(moved) - block(inp)).abs().amax(dim=-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [0, 1, 4, 5]


def test_pooling_attention_keeps_the_queries_and_pooling_cuts_the_cost() -> None:
    x = Tokens(64, 16)
    pooled = make_operator("pooling_attention_block", {"pool": 2})
    full = make_operator("pooling_attention_block", {"pool": 1})
    assert pooled.output_type(x) == x
    assert pooled.macs(x) < full.macs(x)


@pytest.mark.parametrize("name", ["linear_attention_block", "xca_block"])
def test_linear_and_cross_covariance_attention_cost_grows_linearly_with_tokens(name: str) -> None:
    op = make_operator(name, {"heads": 2})
    assert op.macs(Tokens(64, 32)) == 4 * op.macs(Tokens(16, 32))


def test_mhsa_cost_grows_quadratically_with_tokens() -> None:
    op = make_operator("mhsa_block", {"heads": 2})
    assert op.macs(Tokens(64, 32)) > 4 * op.macs(Tokens(16, 32))


def test_drop_path_is_the_identity_in_eval_and_random_in_training() -> None:
    x = Tokens(16, 16)
    plain = _seeded("mhsa_block", {}, x)
    dropping = make_operator("mhsa_block", {"drop_path": 0.5}).build(x)
    dropping.load_state_dict(plain.state_dict())
    inp = torch.randn(x.shape(8))
    torch.testing.assert_close(dropping.eval()(inp), plain(inp))
    dropping.train()
    assert not torch.allclose(dropping(inp), dropping(inp))


def test_drop_path_out_of_range_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"'xca_block'.*'drop_path'"):
        make_operator("xca_block", {"drop_path": 1.0})


def test_gpsa_gate_fully_positional_makes_the_mixer_linear_in_its_input() -> None:
    x = Tokens(16, 16)
    block = _seeded("gpsa_block", {"heads": 2}, x)
    mixer = block.mixer
    with torch.no_grad():
        mixer.gate.fill_(50.0)  # sigmoid(50) = 1: attention from relative positions only, not content
    bias = mixer.proj.bias
    a, b = torch.randn(x.shape(1)), torch.randn(x.shape(1))
    torch.testing.assert_close(mixer(a + b) - bias, (mixer(a) - bias) + (mixer(b) - bias), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        mixer.gate.fill_(-50.0)  # content attention only: no longer linear
    assert not torch.allclose(mixer(a + b) - bias, (mixer(a) - bias) + (mixer(b) - bias), atol=1e-3)


def test_gpsa_starts_local_a_single_head_attends_most_to_its_own_position() -> None:
    mixer = _seeded("gpsa_block", {"heads": 1}, Tokens(16, 8)).mixer
    scores = (mixer.rel * mixer.pos[0]).sum(-1)  # (N, N) positional scores of the one head
    assert torch.equal(scores.argmax(dim=-1), torch.arange(16))


def test_levit_attention_is_equivariant_to_flips_its_bias_depends_on_absolute_offsets() -> None:
    x = Image(8, 4, 6)
    module = _seeded("levit_attention", {"heads": 2}, x)
    with torch.no_grad():
        module.bias.normal_()
    inp = torch.randn(x.shape(2))
    for dims in ((3,), (2,)):
        torch.testing.assert_close(module(inp.flip(dims)), module(inp).flip(dims), atol=1e-5, rtol=1e-5)


def test_lambda_layer_needs_an_odd_context() -> None:
    with pytest.raises(SpecError, match=r"'lambda_layer'.*'context'"):
        make_operator("lambda_layer", {"context": 4})


def test_lambda_layer_without_position_lambdas_ignores_the_token_order() -> None:
    """The content lambda is a softmax-weighted summary of the whole map, shared by every position."""
    x = Image(8, 4, 4)
    module = _seeded("lambda_layer", {"heads": 2}, x)
    with torch.no_grad():
        module.position.weight.zero_()
    inp = torch.randn(x.shape(1))
    perm = torch.randperm(16)
    shuffled = inp.flatten(2)[..., perm].reshape(inp.shape)
    torch.testing.assert_close(module(shuffled).flatten(2), module(inp).flatten(2)[..., perm], atol=1e-5, rtol=1e-5)


def test_class_token_head_ignores_the_order_of_the_patches() -> None:
    x = Tokens(16, 32)
    head = _seeded("class_token_head", {"classes": 5, "depth": 2, "heads": 4}, x)
    inp = torch.randn(x.shape(3))
    out = head(inp)
    assert out.shape == (3, 5)
    torch.testing.assert_close(head(inp[:, torch.randperm(16)]), out, atol=1e-5, rtol=1e-5)
