"""Cell spaces: NB201 cells type-checked per edge, round-tripped through arch strings, built and trained."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace import Architecture, Candidate, Choice, Image, get_space
from archetype.searchspace.cell import Cell, CellSpace, Piece, live_edges
from archetype.searchspace.nb201 import NB201_EDGES, NB201_OPS, format_nb201
from archetype.searchspace.spaces.nb201 import nb201_architecture, nb201_space

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_CONV3 = format_nb201(["nor_conv_3x3"] * 6)
ALL_NONE = format_nb201(["none"] * 6)


def test_every_nb201_cell_round_trips_through_its_arch_string() -> None:
    space = nb201_space(Image(3, 32, 32), 10)
    keys = set()
    for ops in itertools.product(NB201_OPS, repeat=6):
        text = format_nb201(ops)
        arch = nb201_architecture(space, text)
        assert arch.to_nb201() == text
        keys.add(arch.key)
    assert len(keys) == 5**6 == space.size()


def test_parameter_counts_match_the_published_nb201_sizes() -> None:
    # NAS-Bench-201 lists CIFAR-10 networks from 0.073306 M (no weighted edge) to 1.531546 M (all 3x3 convs)
    # parameters, and 1.537396 M for the all-3x3 network with CIFAR-100's 100 classes.
    assert Architecture.from_nb201(ALL_NONE).params() == 73_306
    assert Architecture.from_nb201(ALL_CONV3).params() == 1_531_546
    assert Architecture.from_nb201(ALL_CONV3, classes=100).params() == 1_537_396
    best = Architecture.from_nb201(BEST)
    assert sum(p.numel() for p in best.build().parameters()) == best.params() == 1_288_506


def test_cell_architecture_json_key_and_graph_encoding() -> None:
    arch = Architecture.from_nb201(BEST)
    again = Architecture.from_json(arch.to_json())  # no space given: rebuilt from the macro it carries
    assert again.key == arch.key and again.to_nb201() == BEST and again.params() == arch.params()
    assert Architecture.from_nb201(BEST, cells_per_stage=1).key != arch.key
    enc = Architecture.from_nb201(format_nb201(["none", *["skip_connect"] * 5])).encode()
    assert len(enc) == 6 + 6 * 5 + 1
    assert enc[:6] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # edge 0->1 is zero: no adjacency
    assert [enc[6 + 5 * k: 11 + 5 * k].index(1.0) for k in range(6)] == [0, 1, 1, 1, 1, 1]
    assert enc[-1] == 0.0  # data flows through the cell
    cut = Architecture.from_nb201(format_nb201(["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "none", "none",
                                                "none"])).encode()
    assert cut[-1] == 1.0  # nothing reaches node 3: the network's output is a constant
    g = arch.graph()
    edge_ops = [d for d in g.nodes.values() if d.get("kind") == "cell"]
    assert len(edge_ops) == 15 * 6
    assert sum(d["n_params"] for d in g.nodes.values() if "n_params" in d) == arch.params()
    assert g.in_degree("stage2.cell1/n3") == 3 and g.out_degree("stage2.cell1/n1") == 2


def test_type_checker_checks_every_edge() -> None:
    cell = Cell("c", 3, ((0, 1), (0, 2), (1, 2)), (Candidate.of("identity"), Candidate.of("pool")),
                categories=("shape-preserving", "downsampling"))
    space = CellSpace.of("t", Image(4, 8, 8), None, (cell,), (Piece.of_cell("only", "c"),), {"space": "t"})
    good = space.architecture(tuple(Choice.of(s.name, "identity", {}) for s in space.slots))
    assert space.validate(good).cell_space().piece_typing(good)[-1].output == Image(4, 8, 8)
    bad = space.architecture((Choice.of("c.edge0_1", "identity", {}), Choice.of("c.edge0_2", "identity", {}),
                              Choice.of("c.edge1_2", "pool", {"kind": "max"})))
    with pytest.raises(TypeCheckError, match=r"c\.edge1_2.*Image\[4,4,4\].*node 2 already holds Image\[4,8,8\]"):
        space.validate(bad)
    nb = nb201_space(Image(3, 32, 32), 10)
    wrong = tuple(Choice.of(s.name, "pool", {"kind": "avg"}) if k == 0 else Choice.of(s.name, "identity", {})
                  for k, s in enumerate(nb.slots))
    with pytest.raises(SpecError, match=r"slot 'cell\.edge0_1': operator 'pool' is not a candidate"):
        nb.validate(nb.architecture(wrong))


def test_cell_definitions_are_checked() -> None:
    with pytest.raises(SpecError, match="node 2 has no incoming edge"):
        Cell("c", 3, ((0, 1),), (Candidate.of("identity"),))
    with pytest.raises(SpecError, match="edge 2->1"):
        Cell("c", 3, ((0, 1), (2, 1)), (Candidate.of("identity"),))
    with pytest.raises(SpecError, match="cells_per_stage"):
        nb201_space(Image(3, 32, 32), 10, cells_per_stage=0)


def test_nb201_network_trains_and_strategies_see_plain_slots() -> None:
    space = get_space("nb201", Image(3, 32, 32), 10)
    arch = space.sample(np.random.default_rng(0))
    assert all(len(s.candidates) == 5 for s in space.slots) and len(space.slots) == 6
    assert all(n.to_nb201() != arch.to_nb201() for n in space.neighbours(arch))
    assert len(list(space.neighbours(arch))) == 6 * 4
    small = Architecture.from_nb201(BEST, cells_per_stage=1)
    model = small.build().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_edge_order_is_the_nb201_order() -> None:
    space = nb201_space(Image(3, 32, 32), 10)
    assert [s.name for s in space.slots] == [f"cell.edge{i}_{j}" for i, j in NB201_EDGES]


def test_fbnet_architectures_round_trip_through_arch_str_lists() -> None:
    from archetype.worker.published_table import shared_benchmarks_dir

    space = get_space("fbnet", Image(3, 32, 32), 100)
    rng = np.random.default_rng(0)
    lists = [list(Architecture.from_fbnet(space.sample(rng).to_fbnet()).to_fbnet()) for _ in range(20)]
    root = shared_benchmarks_dir()
    if root is not None:
        import gzip
        import json

        with gzip.open(root / "fbnet_latency.json.gz", "rt") as f:
            lists += [e["arch_str"] for e in json.load(f)["metainfo"]["arch"][::25]]  # 200 of the 5,000
    for layers in lists:
        arch = Architecture.from_fbnet(layers)
        assert arch.to_fbnet() == list(layers)
        assert space.validate(Architecture.from_json(arch.to_json(), space)).key == arch.key
    skips = Architecture.from_fbnet(["skip"] * 22)
    model = skips.build()
    assert sum(p.numel() for p in model.parameters()) == skips.params()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(SpecError, match="FBNet layer 3: unknown choice 'k7_e1'"):
        Architecture.from_fbnet(["k3_e1"] * 3 + ["k7_e1"] + ["k3_e1"] * 18)


def test_darts_space_searches_inputs_and_trains() -> None:
    space = get_space("darts", Image(3, 32, 32), 10)
    assert len(space.slots) == 2 * 4 * 2  # two cells, four nodes, two inputs each
    node3 = next(s for s in space.slots if s.name == "normal.node3.in1")
    assert {dict(c.domain)["source"] for c in node3.candidates} == {(0, 1, 2)}
    arch = space.sample(np.random.default_rng(3))
    again = Architecture.from_json(arch.to_json())
    assert again.key == arch.key and again.params() == arch.params()
    bad = [Choice.of(c.slot, c.op, {**dict(c.params), "source": 3}) if c.slot == "normal.node2.in0" else c
           for c in arch.choices]
    with pytest.raises(SpecError, match=r"normal\.node2\.in0.*source=3 is outside \[0, 1\]"):
        space.validate(space.architecture(tuple(bad)))
    model = arch.build().train()
    assert sum(p.numel() for p in model.parameters()) == arch.params()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(4)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    g = arch.graph()
    assert sum(1 for d in g.nodes.values() if d.get("kind") == "cell") == 8 * 8  # 8 placed cells of 8 edges


NB201_YAML = """
name: nb201-yaml
cells:
  - name: cell
    nodes: 4
    edges: all
    categories: [shape-preserving]
    candidates: [{op: zero}, {op: identity}, {op: relu_conv_bn_1x1}, {op: relu_conv_bn_3x3}, {op: avg_pool_3x3}]
skeleton:
  - {name: stem, op: conv_bn_act, width: 16, kernel: 3, act: none}
  - {name: stage1, cell: cell, repeat: 5}
  - {name: stage2.reduce, op: residual_reduction, width: 32}
  - {name: stage2, cell: cell, repeat: 5}
  - {name: stage3.reduce, op: residual_reduction, width: 64}
  - {name: stage3, cell: cell, repeat: 5}
  - {name: head.norm, op: bn_act}
  - {name: head, op: classifier_head, classes: $classes}
"""


def test_a_cell_space_written_in_yaml_types_and_costs_as_the_python_one(tmp_path) -> None:
    path = tmp_path / "nb201.yaml"
    path.write_text(NB201_YAML)
    space = get_space(str(path), Image(3, 32, 32), 10)
    assert isinstance(space, CellSpace) and space.size() == 5**6
    choices = tuple(Choice.of(s.name, "relu_conv_bn_3x3", {}) for s in space.slots)
    arch = space.validate(space.architecture(choices))
    assert arch.params() == Architecture.from_nb201(ALL_CONV3).params() == 1_531_546
    assert arch.key != Architecture.from_nb201(ALL_CONV3).key  # another space's skeleton, another network name


@pytest.mark.parametrize(("change", "said"), [
    (("cell: cell, repeat: 5}", "cell: cel, repeat: 5}"), r"nb201\.yaml:\d+: slot 'stage1': unknown cell 'cel'"),
    (("edges: all", "edges: [[0, 1], [2, 1]]"), r"nb201\.yaml:\d+: slot 'cell': cell 'cell': edge 2->1"),
    (("width: 32}", "width: [32, 64]}"), r"nb201\.yaml:\d+: slot 'stage2\.reduce': .*must be one value"),
    (("nodes: 4", "nodes: 40"), r"nb201\.yaml:\d+: slot 'cell': 'nodes' must be an integer 2\.\.16, got 40"),
])
def test_bad_cell_yaml_is_one_line_naming_file_and_line(tmp_path, change, said) -> None:
    path = tmp_path / "nb201.yaml"
    path.write_text(NB201_YAML.replace(*change))
    with pytest.raises(SpecError, match=said) as info:
        get_space(str(path), Image(3, 32, 32), 10)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ops, expected", [
    (["nor_conv_3x3"] * 6, [True] * 6),
    (["none"] * 6, [False] * 6),
    (["none", "nor_conv_3x3", "nor_conv_3x3", "none", "nor_conv_3x3", "none"], [False] * 6),  # no path to node 3
    (["skip_connect", "none", "none", "none", "avg_pool_3x3", "nor_conv_1x1"], [True, False, False, False, True,
                                                                                 False]),
])
def test_live_edges_are_the_real_edges_on_a_path_from_input_to_output(ops, expected) -> None:
    assert live_edges(4, NB201_EDGES, [op != "none" for op in ops]) == expected


def test_a_cell_summing_its_intermediate_nodes_keeps_every_reached_edge_live() -> None:
    edges = [(0, 1), (1, 2), (0, 2)]
    assert live_edges(4, edges, [True, True, False], sums_intermediates=True) == [True, True, False]
    assert live_edges(4, edges, [True, True, False]) == [False, False, False]  # nothing reaches node 3
