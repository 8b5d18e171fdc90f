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
