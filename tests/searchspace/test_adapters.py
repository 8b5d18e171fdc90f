"""Layout adapters inserted by a space, and volumes flowing into 2-D operators through them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace import Architecture, Candidate, Choice, Image, SearchSpace, Slot, Vector, Volume
from archetype.searchspace.adapters import adapter_slot, without_adapters
from archetype.searchspace.yaml_space import load_space_yaml


def _hybrid(adapters: bool) -> SearchSpace:
    return SearchSpace(
        name="hybrid-adapted",
        input=Image(1, 8, 8),
        output=Vector(10),
        adapters=adapters,
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": [8, 16], "kernel": 3}),)),
            Slot("mixer", (Candidate.of("mhsa_block", {"heads": 2}), Candidate.of("convnext_block"))),
            Slot("back", (Candidate.of("conv_bn_act", {"width": 16, "kernel": 3}),)),
            Slot("head", (Candidate.of("classifier_head", {"classes": 10}),)),
        ),
    )


def test_adapters_appear_exactly_where_layouts_change() -> None:
    space = _hybrid(adapters=True)
    attention = space.architecture((
        Choice.of("stem", "conv_bn_act", {"width": 8, "kernel": 3}),
        Choice.of("mixer", "mhsa_block", {"heads": 2}),
        Choice.of("back", "conv_bn_act", {"width": 16, "kernel": 3}),
        Choice.of("head", "classifier_head", {"classes": 10}),
    ))
    assert [(c.slot, c.op) for c in attention.choices] == [
        ("stem", "conv_bn_act"), (adapter_slot("mixer"), "image_to_tokens"), ("mixer", "mhsa_block"),
        (adapter_slot("back"), "unpatchify"), ("back", "conv_bn_act"), ("head", "classifier_head"),
    ]
    assert [str(t.output) for t in attention.typing()][1:4] == ["Tokens[64,8]", "Tokens[64,8]", "Image[8,8,8]"]
    assert adapter_slot("mixer") in attention.graph().nodes
    assert "image_to_tokens" in attention.to_json()["slots"][1]["op"]
    out = attention.build().eval()(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    convnext = Choice.of("mixer", "convnext_block", {})
    conv = space.architecture((attention.choices[0], convnext, *attention.choices[4:]))
    assert not any(c.slot.startswith("adapter>") for c in conv.choices)


def test_sampling_validation_and_mutation_keep_adapters_consistent() -> None:
    space = _hybrid(adapters=True)
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        restored = space.architecture_from_json(arch.to_json())
        assert restored.key == arch.key
        assert len(space.encode(arch)) == len(space.encode(space.sample(rng)))
        for neighbour in space.neighbours(arch):
            assert space.validate(neighbour).key == neighbour.key
    moved = Architecture(arch.input, without_adapters(arch.choices), space, space.skip_edges())
    if moved.choices != arch.choices:
        with pytest.raises(SpecError, match="places adapters"):
            space.validate(moved)


def test_without_adapters_a_layout_change_is_a_type_error_naming_the_slot() -> None:
    space = _hybrid(adapters=False)
    arch = space.architecture((
        Choice.of("stem", "conv_bn_act", {"width": 8, "kernel": 3}),
        Choice.of("mixer", "mhsa_block", {"heads": 2}),
        Choice.of("back", "conv_bn_act", {"width": 16, "kernel": 3}),
        Choice.of("head", "classifier_head", {"classes": 10}),
    ))
    with pytest.raises(TypeCheckError, match=r"slot 'mixer' receives Image\[8,8,8\]"):
        arch.typing()


def test_a_volume_space_folds_depth_into_channels_before_2d_operators() -> None:
    space = SearchSpace(
        name="clips",
        input=Volume(1, 4, 8, 8),
        output=Vector(5),
        adapters=True,
        slots=(
            Slot("stem", (Candidate.of("conv3d_bn_act", {"width": [4, 8], "stride": [1, 2]}),)),
            Slot("body", (Candidate.of("dwsep_conv", {"width": 16}), Candidate.of("basic_block", {"width": 16}))),
            Slot("head", (Candidate.of("classifier_head", {"classes": 5}),)),
        ),
    )
    rng = np.random.default_rng(1)
    for _ in range(8):
        arch = space.sample(rng)
        assert arch.choices[1].op == "fold_depth"
        typing = arch.typing()
        stem = typing[0].output
        assert typing[1].output == Image(stem.C * stem.D, stem.H, stem.W)
        assert arch.build().eval()(torch.randn(3, 1, 4, 8, 8)).shape == (3, 5)
        assert arch.params() == sum(p.numel() for p in arch.build().parameters())


def test_yaml_adapters_flag(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "adapters: true\nslots:\n  - name: stem\n    candidates: [{op: conv_bn_act, width: 8}]\n"
        "  - name: mixer\n    candidates: [{op: mhsa_block, heads: 2}]\n"
        "  - name: head\n    candidates: [{op: token_head, classes: $classes}]\n"
    )
    space = load_space_yaml(path, Image(1, 8, 8), 10)
    arch = space.sample(np.random.default_rng(0))
    assert [c.op for c in arch.choices][:3] == ["conv_bn_act", "image_to_tokens", "mhsa_block"]
    path.write_text("adapters: maybe\nslots:\n  - name: stem\n    candidates: [{op: conv_bn_act, width: 8}]\n")
    with pytest.raises(SpecError, match=r"space.yaml:1: adapters must be true or false, got 'maybe'"):
        load_space_yaml(path, Image(1, 8, 8), 10)
