"""NeuralArTS relations and categories, answered from the registered operators' type functions."""

from __future__ import annotations

import pytest

from archetype.searchspace import Image, Tokens, get_operator, list_operators, make_operator
from archetype.searchspace.operator import CATEGORIES, categorize
from archetype.searchspace.relations import (
    PROBES,
    forward_compatible,
    instance_equivalent,
    instances,
    operators_in_category,
    signature,
    type_equivalent,
)


def test_dilated_conv_is_type_equivalent_to_conv_with_the_same_width():
    """NeuralArTS' generation example: a dilated conv with matching padding replaces a plain one."""
    plain = make_operator("conv_bn_act", {"width": 32, "kernel": 3})
    dilated = make_operator("dilated_conv", {"width": 32, "dilation": 2})
    assert type_equivalent(plain, dilated)
    assert not type_equivalent(plain, make_operator("conv_bn_act", {"width": 32, "stride": 2}))
    assert not type_equivalent(plain, make_operator("conv_bn_act", {"width": 16}))


def test_instance_equivalence_holds_at_one_input_only():
    widen = make_operator("pointwise_conv", {"width": 16})
    keep = make_operator("identity", {})
    assert instance_equivalent(widen, keep, Image(16, 8, 8))
    assert not instance_equivalent(widen, keep, Image(32, 8, 8))
    assert not type_equivalent(widen, keep)


def test_forward_compatibility_follows_the_types():
    patchify = make_operator("patchify", {"patch": 2, "width": 32})
    attention = make_operator("mhsa_block", {"heads": 4, "mlp_ratio": 2})
    conv = make_operator("conv_bn_act", {"width": 8})
    x = Image(3, 8, 8)
    assert forward_compatible(patchify, attention, x)
    assert not forward_compatible(patchify, conv, x)  # a conv does not take Tokens
    assert not forward_compatible(make_operator("classifier_head", {"classes": 10}), conv, x)


@pytest.mark.parametrize("category", CATEGORIES)
def test_category_queries_agree_with_categorize(category):
    for layout in (Image, Tokens):
        for op_cls in operators_in_category(category, layout):
            assert layout in op_cls.accepts
            assert any(
                all(categorize(x, op.output_type(x)) == category for x in PROBES[layout])
                for op in instances(op_cls)
                if all(_accepts(op, x) for x in PROBES[layout])
            ), op_cls.name


def _accepts(op, x) -> bool:
    try:
        op.output_type(x)
    except TypeError:
        return False
    return True


def test_any_shape_preserving_image_operator_includes_every_family_that_has_one():
    names = {o.name for o in operators_in_category("shape-preserving", Image)}
    assert {"convnext_block", "wavemix_block", "involution", "se_block", "identity"} <= names
    assert "conv_bn_act" not in names  # its width is a hyperparameter, not the input's
    tokens = {o.name for o in operators_in_category("shape-preserving", Tokens)}
    assert {"mhsa_block", "mixer_block", "ssm2d_block", "mlstm_block"} <= tokens
    assert {o.name for o in operators_in_category("layout-changing", Image)} >= {"patchify", "image_to_tokens"}
    assert {o.name for o in operators_in_category("head", Tokens)} == {"token_head", "class_token_head"}


@pytest.mark.parametrize("op_cls", list_operators(), ids=lambda c: c.name)
def test_every_operator_has_a_signature(op_cls):
    text = signature(op_cls)
    assert "->" in text and "?" not in text, text
    for layout in op_cls.accepts:
        assert f"{layout.layout}[" in text


def test_signatures_name_dimensions_symbolically():
    assert signature(get_operator("basic_block")) == "Image[C,H,W] -> Image[width,H/stride,W/stride]"
    assert signature(get_operator("dense_layer")) == "Image[C,H,W] -> Image[C+growth,H,W]"
    assert signature(get_operator("patchify")) == "Image[C,H,W] -> Tokens[H*W/patch²,width]"
    assert signature(get_operator("unpatchify")) == "Tokens[N,C] -> Image[C,√N,√N]"
