"""An architecture's networkx graph drawn as SVG: the chain top to bottom, skip edges as arcs on the right."""

from __future__ import annotations

from html import escape
from typing import Any

import networkx as nx

_WIDTH, _BOX_W, _BOX_H, _GAP = 520, 300, 40, 26
_LEFT = 110  # room for the tensor types on the chain's edges
_MAX_PARAMS_TEXT = 44


def architecture_svg(graph: nx.DiGraph) -> str:
    """SVG markup of ``graph`` (as ``Architecture.graph()`` makes it), every label escaped."""
    nodes = list(graph.nodes)  # input, the slots in order, output
    row = {node: i for i, node in enumerate(nodes)}
    height = len(nodes) * (_BOX_H + _GAP) + _GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="arch-graph" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-label="architecture graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for source, target, data in graph.edges(data=True):
        parts.append(_edge(row[source], row[target], data))
    for node in nodes:
        parts.append(_node(str(node), graph.nodes[node], row[node]))
    parts.append("</svg>")
    return "\n".join(parts)


def _top(row: int) -> int:
    return _GAP + row * (_BOX_H + _GAP)


def _edge(source_row: int, target_row: int, data: dict[str, Any]) -> str:
    kind = data.get("kind", "chain")
    if kind == "skip":
        x = _LEFT + _BOX_W
        y1, y2 = _top(source_row) + _BOX_H / 2, _top(target_row) + _BOX_H / 2
        bulge = x + 30 + 12 * (target_row - source_row)
        return (
            f'<path class="edge skip" d="M{x},{y1} C{bulge},{y1} {bulge},{y2} {x},{y2}" fill="none" '
            f'stroke="#c0392b" stroke-dasharray="5,3" marker-end="url(#arrow)"><title>skip: adds '
            f'{escape(str(data.get("type", "")))}</title></path>'
        )
    x = _LEFT + _BOX_W / 2
    y1, y2 = _top(source_row) + _BOX_H, _top(target_row)
    label = escape(str(data.get("type", "")))
    return (
        f'<line class="edge chain" x1="{x}" y1="{y1}" x2="{x}" y2="{y2 - 1}" stroke="#555" '
        'marker-end="url(#arrow)"/>'
        f'<text class="edge-type" x="{_LEFT - 8}" y="{(y1 + y2) / 2 + 4}" text-anchor="end">{label}</text>'
    )


def _node(name: str, data: dict[str, Any], row: int) -> str:
    op = data.get("op")
    if op is None:  # the input or output
        title, detail, css = name, str(data.get("type", "")), "io"
    else:
        params = ", ".join(f"{k}={v}" for k, v in sorted(data.get("params", {}).items()))
        if len(params) > _MAX_PARAMS_TEXT:
            params = params[: _MAX_PARAMS_TEXT - 1] + "\u2026"
        title, detail = f"{name}: {op}", params or str(data.get("category", ""))
        css = "identity" if op == "identity" else "op"
    top, middle = _top(row), _LEFT + _BOX_W / 2
    hover = escape(f"{title}\n{detail}\nparams {data.get('n_params', '-')}, MACs {data.get('macs', '-')}")
    return (
        f'<g class="node {css}" data-node="{escape(name)}"><title>{hover}</title>'
        f'<rect x="{_LEFT}" y="{top}" width="{_BOX_W}" height="{_BOX_H}" rx="6"/>'
        f'<text class="node-title" x="{middle}" y="{top + 16}" text-anchor="middle">{escape(title)}</text>'
        f'<text class="node-detail" x="{middle}" y="{top + 32}" text-anchor="middle">{escape(detail)}</text>'
        "</g>"
    )
