"""Tensor types parse back from their text, and type pairs fall into the right category."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archetype.searchspace import Image, TensorType, Tokens, Vector, parse_type
from archetype.searchspace.operator import categorize

dims = st.integers(min_value=1, max_value=10_000)
tensor_types = st.one_of(st.builds(Image, dims, dims, dims), st.builds(Tokens, dims, dims), st.builds(Vector, dims))


@given(tensor_types)
def test_parse_type_round_trips(t: TensorType) -> None:
    assert parse_type(str(t)) == t
    assert parse_type(t.to_json()) == t
    assert t.shape(4) == (4, *t.dims())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Image[3,32,32]", Image(3, 32, 32)),
        ("  Image [ 3, 32 ,32 ] ", Image(3, 32, 32)),
        ("Tokens[196,64]", Tokens(196, 64)),
        ("Vector[10]", Vector(10)),
    ],
)
def test_parse_type_accepts_spacing(text: str, expected: TensorType) -> None:
    assert parse_type(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Image[3,32]", "Image takes 3 dimensions, got 2"),
        ("Vector[1,2]", "Vector takes 1 dimensions, got 2"),
        ("Matrix[3,3]", "unknown tensor layout 'Matrix'; known: Image, Tokens, Vector"),
        ("Image[0,8,8]", "every dimension must be positive"),
        ("Image[-1,8,8]", "not a tensor type"),
        ("Image[a,b,c]", "not a tensor type"),
        ("Image", "not a tensor type"),
        ("", "not a tensor type"),
        ("Image[1,,8,8]", "not a tensor type"),
        ("Image[1,8,8,]", "not a tensor type"),
        ("Image[1 8 8]", "not a tensor type"),
        ("Image[]", "not a tensor type"),
    ],
)
def test_parse_type_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_type(text)


@pytest.mark.parametrize(
    ("x", "y", "category"),
    [
        (Image(8, 8, 8), Image(8, 8, 8), "shape-preserving"),
        (Image(8, 8, 8), Image(16, 8, 8), "channel-changing"),
        (Image(8, 8, 8), Image(16, 4, 4), "downsampling"),
        (Image(8, 8, 8), Image(8, 4, 4), "downsampling"),
        (Image(8, 4, 4), Image(8, 8, 8), "upsampling"),
        (Image(3, 16, 16), Tokens(16, 64), "layout-changing"),
        (Tokens(16, 64), Image(64, 4, 4), "layout-changing"),
        (Image(64, 4, 4), Vector(10), "head"),
        (Tokens(16, 64), Vector(10), "head"),
        (Tokens(16, 64), Tokens(16, 64), "shape-preserving"),
        (Tokens(16, 64), Tokens(16, 128), "channel-changing"),
        (Tokens(16, 64), Tokens(4, 128), "downsampling"),
        (Tokens(4, 64), Tokens(16, 64), "upsampling"),
        (Vector(32), Vector(10), "channel-changing"),
        (Vector(32), Vector(32), "shape-preserving"),
    ],
)
def test_categorize(x: TensorType, y: TensorType, category: str) -> None:
    assert categorize(x, y) == category


def test_types_are_values() -> None:
    assert Image(1, 8, 8) == Image(1, 8, 8)
    assert Image(1, 8, 8) != Image(8, 1, 8)
    assert len({Image(1, 8, 8), Image(1, 8, 8), Vector(10)}) == 2
    assert str(Image(1, 8, 8)) == "Image[1,8,8]"
