"""The architecture drawing: one box per node in chain order, skip edges as arcs, every label escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import networkx as nx

from archetype.dashboard.graph_svg import architecture_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_nodes_in_order_with_skip_edges_and_escaped_labels() -> None:
    graph = nx.DiGraph()
    graph.add_node("input", type="Image[1,8,8]")
    graph.add_node("a", op="conv_bn_act", params={"kernel": 3}, category="channel-changing", n_params=88, macs=4608)
    graph.add_node("b<&>", op="identity", params={}, category="shape-preserving", n_params=0, macs=0)
    graph.add_node("output", type="Vector[10]")
    graph.add_edge("input", "a", type="Image[1,8,8]", kind="chain")
    graph.add_edge("a", "b<&>", type="Image[8,8,8]", kind="chain")
    graph.add_edge("input", "b<&>", type="Image[8,8,8]", kind="skip")
    graph.add_edge("b<&>", "output")

    svg = architecture_svg(graph)
    root = ET.fromstring(svg)  # well-formed despite the '<&>' in a slot name
    nodes = [g.get("data-node") for g in root.iter(f"{SVG}g") if "node" in (g.get("class") or "")]
    assert nodes == ["input", "a", "b<&>", "output"]
    assert len([p for p in root.iter(f"{SVG}path") if "skip" in (p.get("class") or "")]) == 1
    assert len([line for line in root.iter(f"{SVG}line") if "chain" in (line.get("class") or "")]) == 3
    assert "a: conv_bn_act" in svg and "kernel=3" in svg and "b&lt;&amp;&gt;: identity" in svg


def test_a_cell_architecture_is_drawn_and_its_slots_sum_every_placed_copy() -> None:
    from archetype.dashboard.queries import _architecture
    from archetype.searchspace import Architecture

    arch = Architecture.from_nb201("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|",
                                   cells_per_stage=2)
    slots, svg, error = _architecture(arch.to_json())
    assert error is None and svg is not None
    ET.fromstring(svg)
    first = slots[0]
    assert (first.slot, first.op, first.category) == ("cell.edge0_1", "relu_conv_bn_3x3", "shape-preserving")
    assert first.n_params == 2 * sum(9 * c * c + 2 * c for c in (16, 32, 64))  # 2 cells per stage, 3 stages
    assert sum(s.n_params for s in slots) < arch.params()  # the stem, reductions and head are not slots
