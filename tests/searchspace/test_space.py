"""Spaces make well-typed architectures, and the checker refuses ill-typed ones before building."""

from __future__ import annotations

import itertools
import json

import networkx as nx
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace import (
    Architecture,
    Candidate,
    Choice,
    Image,
    SearchSpace,
    Slot,
    Vector,
    get_space,
    list_spaces,
)
from archetype.searchspace.ops.conv import ConvBnAct

INPUTS = [Image(1, 8, 8), Image(1, 28, 28)]


@pytest.fixture(scope="module", params=INPUTS, ids=str)
def space(request) -> SearchSpace:
    return get_space("conv-small", request.param, 10)


@pytest.fixture(scope="module")
def samples(space: SearchSpace) -> list[Architecture]:
    rng = np.random.default_rng(0)
    return [space.sample(rng) for _ in range(200)]


def _with(arch: Architecture, slot: str, op: str, **params) -> Architecture:
    """``arch`` with one slot's choice replaced, still bound to its space."""
    choices = tuple(Choice.of(c.slot, op, params) if c.slot == slot else c for c in arch.choices)
    return Architecture(arch.input, choices, arch.space)


def test_samples_type_check_build_and_run(space: SearchSpace, samples: list[Architecture]) -> None:
    x = torch.randn(space.input.shape(2))
    for arch in samples:
        typings = arch.typing()
        assert typings[-1].output == Vector(10)
        assert space.validate(arch).key == arch.key
        model = arch.build().eval()
        with torch.no_grad():
            assert tuple(model(x).shape) == (2, 10)


def test_keys_are_equal_exactly_for_equal_choices(space: SearchSpace, samples: list[Architecture]) -> None:
    by_key: dict[str, tuple[Choice, ...]] = {}
    for arch in samples:
        assert by_key.setdefault(arch.key, arch.choices) == arch.choices
    assert len(by_key) == len({a.choices for a in samples}) > 150
    again = [space.sample(np.random.default_rng(0)).key for _ in range(2)]
    assert again[0] == again[1] == samples[0].key


def test_key_is_pinned() -> None:
    """Stored studies refer to architectures by key: changing the canonical form orphans them."""
    data = {
        "input": "Image[1,8,8]",
        "slots": [
            {"slot": "stem", "op": "conv_bn_act", "params": {"width": 8, "kernel": 3, "stride": 1}},
            {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
        ],
    }
    assert Architecture.from_json(data).key == "f098887d7b91b414"


def test_json_round_trip_keeps_the_key(space: SearchSpace, samples: list[Architecture]) -> None:
    for arch in samples[:50]:
        data = json.loads(json.dumps(arch.to_json()))
        assert Architecture.from_json(data).key == arch.key
        assert space.architecture_from_json(data) == arch
    with pytest.raises(SpecError, match="not an architecture JSON object"):
        Architecture.from_json({"slots": []})


def test_validate_names_the_slot(space: SearchSpace, samples: list[Architecture]) -> None:
    arch = samples[0]
    dropped = Architecture(arch.input, arch.choices[1:], space)
    with pytest.raises(SpecError, match=r"has slots .*'stem'.*architecture has"):
        space.validate(dropped)
    with pytest.raises(SpecError, match="slot 'stem': operator 'identity' is not a candidate"):
        space.validate(_with(arch, "stem", "identity"))
    with pytest.raises(SpecError, match=r"slot 'stem': conv_bn_act.width=7 is outside \[8, 16, 24\]"):
        space.validate(_with(arch, "stem", "conv_bn_act", width=7, kernel=3, stride=1))
    with pytest.raises(TypeCheckError, match="takes input"):
        space.validate(Architecture(Image(3, 8, 8), arch.choices, space))


def _stem_or_head_space() -> SearchSpace:
    """A space whose stem may (wrongly) take a classifier head."""
    return SearchSpace(
        name="ill-typed",
        input=Image(1, 8, 8),
        output=Vector(10),
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": 8}), Candidate.of("classifier_head", {"classes": 10}))),
            Slot("body", (Candidate.of("conv_bn_act", {"width": 8, "kernel": 3, "stride": 1}),)),
            Slot("head", (Candidate.of("classifier_head", {"classes": 10}),)),
        ),
    )


def test_type_checker_refuses_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(self, x):
        raise AssertionError("an operator was built before the type check")

    monkeypatch.setattr(ConvBnAct, "build", no_build)
    space = _stem_or_head_space()
    arch = Architecture(
        space.input,
        (
            Choice.of("stem", "classifier_head", {"classes": 10}),
            Choice.of("body", "conv_bn_act", {"width": 8, "kernel": 3, "stride": 1}),
            Choice.of("head", "classifier_head", {"classes": 10}),
        ),
        space,
    )
    with pytest.raises(TypeCheckError, match=r"slot 'body'.*Vector\[10\].*Image") as exc:
        space.validate(arch)
    assert "\n" not in str(exc.value)
    with pytest.raises(TypeCheckError, match=r"slot 'body'.*Vector\[10\].*Image"):
        arch.build()


def test_type_checker_refuses_a_stride_on_a_one_pixel_map() -> None:
    arch = Architecture(Image(4, 1, 1), (Choice.of("down", "conv_bn_act", {"width": 8, "stride": 2}),))
    with pytest.raises(TypeCheckError, match=r"slot 'down' receives Image\[4,1,1\]: .*cannot downsample"):
        arch.typing()


def test_slot_category_violation_names_slot_and_category(space: SearchSpace, samples: list[Architecture]) -> None:
    arch = _with(samples[0], "stage1.down", "identity")
    with pytest.raises(TypeCheckError, match=r"slot 'stage1\.down' must be downsampling.*shape-preserving"):
        arch.typing()


def test_space_output_type_is_enforced(samples: list[Architecture]) -> None:
    arch = _with(samples[0], "head", "classifier_head", classes=7)
    with pytest.raises(TypeCheckError, match=r"slot 'head' produces Vector\[7\].*Vector\[10\]"):
        arch.typing()


def test_neighbours_are_well_typed_and_differ_in_one_slot(space: SearchSpace, samples: list[Architecture]) -> None:
    for arch in samples[:20]:
        neighbours = list(space.neighbours(arch))
        assert neighbours
        assert len({n.key for n in neighbours}) == len(neighbours)
        for n in neighbours:
            space.validate(n)
            assert sum(a != b for a, b in zip(arch.choices, n.choices, strict=True)) == 1


def test_encoding_has_fixed_length_and_unit_range(space: SearchSpace, samples: list[Architecture]) -> None:
    vectors = [arch.encode() for arch in samples]
    assert len({len(v) for v in vectors}) == 1
    assert all(0.0 <= value <= 1.0 for v in vectors for value in v)
    assert len({tuple(v) for v in vectors}) == len({a.key for a in samples})


def test_graph_is_a_typed_chain(space: SearchSpace, samples: list[Architecture]) -> None:
    arch = samples[0]
    g = arch.graph()
    order = ["input", *(s.name for s in space.slots), "output"]
    assert isinstance(g, nx.DiGraph)
    assert list(nx.topological_sort(g)) == order
    assert set(g.edges) == set(itertools.pairwise(order))
    assert g.nodes["input"]["type"] == str(space.input)
    assert g.nodes["output"]["type"] == "Vector[10]"
    for t in arch.typing():
        assert g.nodes[t.slot]["op"] == t.choice.op
        assert g.edges[order[order.index(t.slot) - 1], t.slot]["type"] == str(t.input)


def test_params_and_macs_match_the_built_network(space: SearchSpace, samples: list[Architecture]) -> None:
    for arch in samples[:25]:
        model = arch.build().eval()
        assert arch.params() == sum(p.numel() for p in model.parameters())
        assert arch.macs() == sum(t.choice.operator().macs(t.input) for t in arch.typing())
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.randn(space.input.shape(1)))
        assert arch.macs() == pytest.approx(counter.get_total_flops() / 2, rel=0.05)


def test_space_refuses_malformed_slots() -> None:
    conv = Candidate.of("conv_bn_act", {"width": 8})
    with pytest.raises(SpecError, match="slot 'a' has no candidate operators"):
        Slot("a", ())
    with pytest.raises(SpecError, match="slot 'a': unknown category 'sideways'"):
        Slot("a", (conv,), ("sideways",))
    with pytest.raises(SpecError, match="slot name 'a' appears twice"):
        SearchSpace("s", Image(1, 8, 8), None, (Slot("a", (conv,)), Slot("a", (conv,))))
    with pytest.raises(SpecError, match="has no hyperparameter 'widht'"):
        Candidate.of("conv_bn_act", {"widht": 8})
    with pytest.raises(SpecError, match="empty domain"):
        Candidate.of("conv_bn_act", {"width": []})


def test_unsatisfiable_space_says_so() -> None:
    space = SearchSpace(
        "no-head", Image(1, 8, 8), Vector(10), (Slot("a", (Candidate.of("conv_bn_act", {"width": 8}),)),)
    )
    with pytest.raises(SpecError, match=r"no well-typed architecture.*Vector\[10\]"):
        space.sample(np.random.default_rng(0))


@pytest.mark.parametrize("names", [("a.b", "a_b"), ("keys",), ("training",), ("",)], ids=repr)
def test_build_refuses_slot_names_that_cannot_name_modules(names: tuple[str, ...]) -> None:
    """Two slots must never share a module, and a slot must not shadow a torch attribute."""
    conv = Choice.of("x", "conv_bn_act", {"width": 8, "kernel": 3, "stride": 1})
    choices = tuple(Choice(name, conv.op, conv.params) for name in names)
    with pytest.raises(SpecError, match=r"module name .* is empty, repeated or a torch attribute"):
        Architecture(Image(1, 8, 8), choices).build()


@pytest.mark.parametrize("name", list_spaces())
def test_every_predefined_space_counts_params_and_mutates_well_typed(name: str) -> None:
    """Each registered space on a 3-channel 32x32 input (test_predefined_spaces covers digits and MNIST)."""
    space = get_space(name, Image(3, 32, 32), 10)
    rng = np.random.default_rng(0)
    for arch in (space.sample(rng) for _ in range(5)):
        model = arch.build().eval()
        with torch.no_grad():
            assert tuple(model(torch.randn(2, 3, 32, 32)).shape) == (2, 10)
        assert arch.params() == sum(p.numel() for p in model.parameters())
        for n in itertools.islice(space.neighbours(arch), 20):
            space.validate(n)


def test_crossover_takes_every_slot_from_one_parent(space: SearchSpace, samples: list[Architecture]) -> None:
    rng = np.random.default_rng(3)
    mixed = 0
    for first, second in zip(samples[:20], samples[20:40], strict=True):
        child = space.crossover(first, second, rng, tries=5)
        assert child is not None
        space.validate(child)
        assert all(c in (a, b) for a, b, c in zip(first.choices, second.choices, child.choices, strict=True))
        mixed += child.key not in (first.key, second.key)
    assert mixed >= 10


def test_crossover_gives_none_when_every_draw_is_ill_typed(space, samples, monkeypatch) -> None:
    def ill_typed(self):
        raise TypeCheckError("no")

    monkeypatch.setattr(Architecture, "typing", ill_typed)
    assert space.crossover(samples[0], samples[1], np.random.default_rng(0), tries=3) is None
