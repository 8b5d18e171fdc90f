"""Skip edges across slots and repeated blocks with elastic depth, in Python and in YAML."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace import Architecture, Image, SearchSpace, Vector
from archetype.searchspace.architecture import Choice
from archetype.searchspace.space import Candidate, Slot, repeated
from archetype.searchspace.yaml_space import load_space_yaml

INPUT = Image(1, 8, 8)
IDENTITY = (Candidate.of("identity"),)


def _skip_space(stem_widths: tuple[int, ...] = (8,)) -> SearchSpace:
    return SearchSpace(
        name="skip",
        input=INPUT,
        output=Vector(10),
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": stem_widths}),)),
            Slot("a", (Candidate.of("conv_bn_act", {"width": 8}), Candidate.of("dwsep_conv", {"width": 8}))),
            Slot("b", (Candidate.of("conv_bn_act", {"width": 8}),), skip="stem"),
            Slot("head", (Candidate.of("classifier_head", {"classes": 10}),)),
        ),
    )


def test_skip_edge_adds_the_earlier_output() -> None:
    arch = _skip_space().sample(np.random.default_rng(0))
    assert arch.skips() == {"b": "stem"}
    net = arch.build().eval()
    x = torch.randn(INPUT.shape(2))
    slots = net.slots
    with torch.no_grad():
        stem = slots["stem"](x)
        expected = slots["head"](slots["b"](slots["a"](stem)) + stem)
        assert torch.allclose(net(x), expected, atol=1e-6)
    skip_edges = [(u, v) for u, v, kind in arch.graph().edges(data="kind") if kind == "skip"]
    assert skip_edges == [("stem", "b")]


def test_skip_edge_between_different_types_is_refused_with_both_types() -> None:
    space = _skip_space(stem_widths=(8, 16))
    draws = [space.sample(np.random.default_rng(seed)) for seed in range(20)]
    assert {dict(a.choice("stem").params)["width"] for a in draws} == {8}  # width 16 never type-checks
    wide_stem = Choice.of("stem", "conv_bn_act", {**dict(draws[0].choices[0].params), "width": 16})
    bad = space.architecture((wide_stem, *draws[0].choices[1:]))
    with pytest.raises(TypeCheckError, match=r"slot 'b' adds the skip edge from 'stem', which carries "
                       r"Image\[16,(\d),\1\], but operator 'conv_bn_act' produces Image\[8,\1,\1\]"):
        bad.typing()


def test_skip_edge_must_come_from_an_earlier_slot() -> None:
    with pytest.raises(SpecError, match="slot 'a' skips from 'b', which is not 'input' or an earlier slot"):
        SearchSpace("s", INPUT, None, (Slot("a", IDENTITY, skip="b"), Slot("b", IDENTITY)))
    space = SearchSpace("s", INPUT, None, (Slot("a", IDENTITY, skip="input"),))
    net = space.sample(np.random.default_rng(0)).build()
    x = torch.randn(INPUT.shape())
    assert torch.equal(net(x), 2 * x)


def test_skips_are_part_of_the_key_and_json_round_trip() -> None:
    arch = _skip_space().sample(np.random.default_rng(0))
    chain = Architecture(arch.input, arch.choices)
    assert arch.key != chain.key
    assert "skips" not in chain.to_json()  # a chain's JSON, and so its key, is unchanged by skip support
    again = Architecture.from_json(arch.to_json(), arch.space)
    assert again == arch and again.key == arch.key
    with pytest.raises(SpecError, match="has skip edges"):
        _skip_space().validate(Architecture.from_json(chain.to_json()))


def test_repeated_block_searches_depth() -> None:
    block = (Candidate.of("conv_bn_act", {"width": 8}),)
    slots = repeated("stage", block, (1, 3))
    assert [s.name for s in slots] == ["stage.1", "stage.2", "stage.3"]
    assert [[c.op for c in s.candidates] for s in slots] == [
        ["conv_bn_act"], ["identity", "conv_bn_act"], ["identity", "conv_bn_act"]
    ]
    space = SearchSpace("d", INPUT, None, slots)
    depths = {sum(c.op != "identity" for c in space.sample(np.random.default_rng(s)).choices) for s in range(40)}
    assert depths == {1, 2, 3}
    assert [s.name for s in repeated("x", block, 2)] == ["x.1", "x.2"]


@pytest.mark.parametrize("depth", [0, (2, 1), (-1, 2), True, (0, 0)])
def test_repeated_refuses_bad_depths(depth) -> None:
    with pytest.raises(SpecError, match="slot 'x': depth must be"):
        repeated("x", (Candidate.of("identity"),), depth)


def test_elastic_depth_needs_shape_preserving_blocks() -> None:
    with pytest.raises(SpecError, match="elastic depth needs shape-preserving"):
        repeated("x", (Candidate.of("pool"),), (1, 2), categories=("downsampling",))


YAML = """\
slots:
  - name: stem
    candidates:
      - op: conv_bn_act
        width: 8
  - name: stage
    repeat: [1, 2]
    candidates:
      - op: conv_bn_act
        width: 8
  - name: mix
    skip: stem
    candidates:
      - op: dwsep_conv
        width: 8
  - name: head
    candidates:
      - op: classifier_head
        classes: $classes
"""


def _load(tmp_path: Path, text: str) -> SearchSpace:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_space_yaml(path, INPUT, 10)


def test_yaml_repeat_and_skip(tmp_path: Path) -> None:
    space = _load(tmp_path, YAML)
    assert [s.name for s in space.slots] == ["stem", "stage.1", "stage.2", "mix", "head"]
    assert space.skip_edges() == (("mix", "stem"),)
    arch = space.sample(np.random.default_rng(0))
    assert arch.build()(torch.randn(INPUT.shape())).shape == (1, 10)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    skip: stem", "    skip: head", r"space.yaml:12: slot 'mix': skip edge from 'head': not 'input' or"),
        ("    repeat: [1, 2]", "    repeat: [2, 1]", r"space.yaml:7: slot 'stage': depth must be"),
        ("    repeat: [1, 2]", "    repeat: two", r"space.yaml:7: slot 'stage': 'repeat' must be a count"),
        ("    skip: stem", "    skip: stem\n    repeat: 2", r"space.yaml:12: slot 'mix': a repeated slot cannot have"),
        ("  - name: mix", "  - name: stage", r"space.yaml:11: slot 'stage': another slot has this name"),
        ("  - name: mix", "  - name: input", r"space.yaml:11: slot 'input': another slot has this name"),
    ],
    ids=["unknown-source", "min-over-max", "not-a-count", "repeat-and-skip", "clash-with-repeat", "input-name"],
)
def test_yaml_skip_and_repeat_errors_name_the_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in YAML
    with pytest.raises(SpecError, match=message):
        _load(tmp_path, YAML.replace(old, new))


def test_yaml_skip_of_mismatched_type_is_unsatisfiable(tmp_path: Path) -> None:
    text = YAML.replace("      - op: dwsep_conv\n        width: 8", "      - op: dwsep_conv\n        width: 16")
    with pytest.raises(SpecError, match="no well-typed architecture: slot 'mix' adds the skip edge from 'stem'"):
        _load(tmp_path, text)
