"""Behaviour specific to the layout operators: patching, token order and token heads."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from archetype.errors import SpecError
from archetype.searchspace import Image, Tokens, make_operator
from archetype.searchspace.operator import OperatorTypeError


def test_patchify_refuses_a_map_not_divisible_by_the_patch_and_names_the_type() -> None:
    with pytest.raises(OperatorTypeError, match=r"'patchify'.*Image\[3,14,16\]"):
        make_operator("patchify", {"patch": 4, "width": 16}).output_type(Image(3, 14, 16))


def test_patchify_makes_one_token_per_patch() -> None:
    assert make_operator("patchify", {"patch": 2, "width": 32}).output_type(Image(3, 8, 12)) == Tokens(24, 32)


def test_patchify_position_embedding_is_optional() -> None:
    x = Image(3, 8, 8)
    with_pos = make_operator("patchify", {"patch": 2, "width": 16})
    without = make_operator("patchify", {"patch": 2, "width": 16, "position": False})
    assert with_pos.params(x) - without.params(x) == 16 * 16
    assert sum(p.numel() for p in without.build(x).parameters()) == without.params(x)


def test_tokens_are_in_row_major_order_and_unpatchify_inverts_image_to_tokens() -> None:
    x = Image(5, 4, 4)
    to_tokens = make_operator("image_to_tokens", {}).build(x)
    back = make_operator("unpatchify", {}).build(Tokens(16, 5))
    inp = torch.randn(x.shape(2))
    tokens = to_tokens(inp)
    torch.testing.assert_close(tokens[:, 1 * 4 + 2], inp[:, :, 1, 2])
    torch.testing.assert_close(back(tokens), inp)


def test_patchify_of_one_pixel_patches_is_a_pointwise_conv_in_the_same_token_order() -> None:
    x = Image(3, 4, 4)
    patch = make_operator("patchify", {"patch": 1, "width": 8, "position": False}).build(x)
    inp = torch.randn(x.shape(2))
    want = F.conv2d(inp, patch.proj.weight, patch.proj.bias)
    torch.testing.assert_close(make_operator("unpatchify", {}).build(Tokens(16, 8))(patch(inp)), want)


def test_unpatchify_refuses_a_non_square_token_count() -> None:
    with pytest.raises(OperatorTypeError, match=r"'unpatchify'.*Tokens\[12,8\]"):
        make_operator("unpatchify", {}).output_type(Tokens(12, 8))


def test_token_head_ignores_the_order_of_the_tokens() -> None:
    x = Tokens(9, 16)
    head = make_operator("token_head", {"classes": 4}).build(x).eval()
    inp = torch.randn(x.shape(2))
    torch.testing.assert_close(head(inp[:, torch.randperm(9)]), head(inp), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["token_head", "class_token_head"])
def test_token_heads_need_at_least_one_class(name: str) -> None:
    with pytest.raises(SpecError, match=rf"'{name}'.*'classes'"):
        make_operator(name, {"classes": 0})
