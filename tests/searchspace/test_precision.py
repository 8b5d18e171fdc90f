"""A per-slot precision (fp32/int8) searched jointly with the architecture."""

from __future__ import annotations

import numpy as np
import pytest

from archetype.errors import SpecError
from archetype.searchspace import Image, get_space
from archetype.searchspace.space import Candidate
from archetype.searchspace.yaml_space import load_space_yaml
from archetype.worker.tabular import tabular_space


@pytest.fixture(scope="module")
def space():
    return tabular_space().with_precision()


def test_only_candidates_with_weights_get_a_precision(space):
    """Each candidate with weights doubles (fp32 or int8); identity and pooling stay as they were."""
    for slot, plain in zip(space.slots, tabular_space().slots, strict=True):
        for cand, before in zip(slot.candidates, plain.candidates, strict=True):
            weighted = cand.op not in ("identity", "pool")
            assert ("precision" in dict(cand.domain)) == weighted, (slot.name, cand.op)
            assert cand.size() == before.size() * (2 if weighted else 1)


def test_the_precision_is_a_searched_value_but_not_an_operator_hyperparameter(space):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(40)]
    assert any(a.int8_slots() for a in archs) and any(not a.int8_slots() for a in archs)
    for arch in archs:
        again = space.architecture_from_json(arch.to_json())
        assert again.key == arch.key and again.int8_slots() == arch.int8_slots()
        same_net = tabular_space().architecture(tuple(
            type(c).of(c.slot, c.op, {k: v for k, v in c.params if k != "precision"}) for c in arch.choices
        ))
        assert arch.params() == same_net.params() and arch.macs() == same_net.macs()
        assert sum(p.numel() for p in arch.build().parameters()) == arch.params()
    assert len(space.encode(archs[0])) > len(tabular_space().encode(tabular_space().sample(rng)))


def test_a_neighbour_may_flip_one_slot_precision(space):
    arch = space.sample(np.random.default_rng(1))
    flips = [n for n in space.neighbours(arch) if n.int8_slots() != arch.int8_slots()
             and [c.op for c in n.choices] == [c.op for c in arch.choices]]
    assert flips and all(len(set(n.int8_slots()) ^ set(arch.int8_slots())) == 1 for n in flips)


def test_a_space_without_precision_keeps_its_keys():
    plain = get_space("conv-small", Image(1, 8, 8), 10)
    arch = plain.sample(np.random.default_rng(2))
    assert "precision" not in arch.canonical_json() and arch.int8_slots() == []


def test_bad_precisions_are_named():
    with pytest.raises(SpecError, match=r"operator 'pool' has no weights, so its precision cannot be searched"):
        Candidate.of("pool", {"precision": ("fp32", "int8")})
    with pytest.raises(SpecError, match=r"operator 'conv_bn_act': precision must be among \['fp32', 'int8'\], got"):
        Candidate.of("conv_bn_act", {"precision": "int4"})
    with pytest.raises(SpecError, match=r"space 'tabular-digits': precision must be among"):
        tabular_space().with_precision(("fp16",))


def test_yaml_precision_key(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("precision: [fp32, int8]\nslots:\n  - name: stem\n    candidates:\n"
                    "      - {op: conv_bn_act, width: 8}\n      - {op: pool}\n"
                    "  - name: head\n    candidates: [{op: classifier_head, classes: $classes}]\n")
    space = load_space_yaml(path, Image(1, 8, 8), 10)
    assert dict(space.slots[0].candidates[0].domain)["precision"] == ("fp32", "int8")
    assert "precision" not in dict(space.slots[0].candidates[1].domain)
    path.write_text(path.read_text().replace("[fp32, int8]", "[fp32, int4]"))
    with pytest.raises(SpecError, match=r"space.yaml:1.*precision must be a list of distinct values among"):
        load_space_yaml(path, Image(1, 8, 8), 10)
