"""Random space files: a valid, well-typed SearchSpace, or one SpecError line naming the file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from archetype.errors import SpecError
from archetype.searchspace import Image, list_operators
from archetype.searchspace.operator import CATEGORIES
from archetype.searchspace.yaml_space import load_space_yaml

EXAMPLES = 2500 if os.environ.get("ARCHETYPE_FUZZ") == "full" else 60
OPERATORS = {op.name: list(op.hyperparameters()) for op in list_operators()}

small = st.one_of(st.integers(-2, 40), st.sampled_from([0, 1, 2, 3, 5, 7, 1000, 10**9, "$classes", "max", "avg"]),
                  st.floats(allow_nan=True), st.text(max_size=6), st.none(), st.booleans())
hyper_values = st.one_of(small, st.lists(small, max_size=4))


@st.composite
def candidates(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 9)) == 0:
        return {"category": draw(st.sampled_from([*CATEGORIES, "nope"])),
                **draw(st.dictionaries(st.sampled_from(["layout"]), st.sampled_from(["Image", "Tokens", "x"])))}
    op = draw(st.sampled_from([*OPERATORS, "no_such_op"]))
    keys = st.sampled_from([*OPERATORS[op], "bogus"]) if OPERATORS.get(op) else st.just("bogus")
    return {"op": op, **draw(st.dictionaries(keys, hyper_values, max_size=4))}


@st.composite
def slots(draw: st.DrawFn) -> dict[str, Any]:
    slot: dict[str, Any] = {"name": draw(st.one_of(st.sampled_from(["stem", "body", "down", "head", "input"]),
                                                    st.text(max_size=6)))}
    if draw(st.integers(0, 3)) == 0:  # a well-formed block, so that what follows is reached
        slot["candidates"] = [{"op": "identity"}, {"op": "conv_bn_act", "width": 8, "kernel": 3}]
    else:
        slot["candidates"] = draw(st.lists(candidates(), max_size=3))
    extras = {
        "categories": st.lists(st.sampled_from([*CATEGORIES, "weird"]), max_size=2),
        "repeat": st.one_of(st.integers(-2, 10**12), st.lists(st.integers(-1, 10**9), max_size=3), st.text(max_size=3)),
        "skip": st.sampled_from(["input", "stem", "body", "nowhere"]),
        "unknown": small,
    }
    for key in draw(st.lists(st.sampled_from(list(extras)), unique=True, max_size=2)):
        slot[key] = draw(extras[key])
    return slot


@st.composite
def space_files(draw: st.DrawFn) -> str:
    top: dict[str, Any] = {"name": draw(st.one_of(st.just("fuzz"), st.text(max_size=8)))}
    if draw(st.booleans()):
        top["input"] = draw(st.sampled_from(["Image[1,8,8]", "Image[3,32,32]", "Tokens[4,8]", "Image[", "x"]))
    head = {"name": "head", "candidates": [{"op": "classifier_head", "classes": "$classes"}]}
    top["slots"] = [*draw(st.lists(slots(), max_size=4)), *([head] if draw(st.booleans()) else [])]
    text = yaml.safe_dump(top, sort_keys=False, allow_unicode=True)
    how = draw(st.integers(0, 3))
    if how == 1:  # truncated
        text = text[: draw(st.integers(0, len(text)))]
    elif how == 2:  # a few characters replaced
        chars = list(text)
        for _ in range(draw(st.integers(1, 4))):
            if chars:
                chars[draw(st.integers(0, len(chars) - 1))] = draw(st.sampled_from(list(":-[]{}&*!|>'\"%@`#\t\n ")))
        text = "".join(chars)
    elif how == 3:  # raw text
        text = draw(st.text(max_size=200))
    return text


@pytest.fixture(scope="module")
def space_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="arc-fuzz-") as folder:
        yield Path(folder) / "space.yaml"


@settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
@given(text=space_files())
def test_a_space_file_loads_or_is_refused_in_one_line(space_path: Path, text: str) -> None:
    space_path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        space = load_space_yaml(space_path, Image(1, 8, 8), 10)
    except SpecError as exc:
        message = str(exc)
        assert message.startswith(str(space_path)) and "\n" not in message, message
        return
    arch = space.sample(np.random.default_rng(1))
    assert space.validate(arch) == arch
