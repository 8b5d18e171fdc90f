"""Latency features of an architecture: one flat vector and one small graph, from whichever space it comes.

A learned latency predictor sees an architecture only through a
``LatencyFeaturizer``: ``encode(item) -> ArchFeatures``. The NB201 and FBNet
featurizers read the published arch strings (``searchspace/nb201.py``); the
space featurizer reads a typed ``Architecture`` (its graph's per-node operators,
MACs, parameters and activation sizes, and the latency table's sum when there is
one). A new space plugs in by adding one featurizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from archetype.errors import SpecError
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.cell import live_edges
from archetype.searchspace.nb201 import FBNET_CHOICES, NB201_EDGES, NB201_OPS, parse_fbnet, parse_nb201
from archetype.searchspace.space import SearchSpace


@dataclass(frozen=True)
class ArchFeatures:
    """What a predictor sees of one architecture: a flat vector, and node features with their adjacency."""

    vector: np.ndarray  # (F,)
    nodes: np.ndarray  # (N, D) one row per graph node
    adjacency: np.ndarray  # (N, N) 1 where an edge runs from row to column


class LatencyFeaturizer(Protocol):
    """Turns an architecture (or its published string) into ``ArchFeatures``; all of one space share shapes."""

    space: str

    def encode(self, item: Any) -> ArchFeatures: ...


def _log_cost(x: float) -> float:
    return math.log1p(max(x, 0.0)) / 20.0


# NB201's fixed skeleton: three stages of five cells, C=16/32/64 at 32/16/8 pixels.
_NB201_STAGES = ((16, 32), (32, 16), (64, 8))
_NB201_NODE_KINDS = ("input", *NB201_OPS, "output")


def _nb201_op_cost(op: str) -> tuple[float, float, float]:
    """MACs, parameters and output activations of one edge op summed over the network's 15 cells."""
    macs = params = acts = 0.0
    for c, hw in _NB201_STAGES:
        pixels = hw * hw
        k = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}.get(op, 0)
        macs += 5 * (c * c * k * pixels + (9 * c * pixels if op == "avg_pool_3x3" else 0))
        params += 5 * (c * c * k + (2 * c if k else 0))
        acts += 5 * (c * pixels if op != "none" else 0)
    return macs, params, acts


def nb201_live_edges(ops: Sequence[str]) -> list[bool]:
    """Which edges carry data from the cell input to its output (an edge off every such path computes nothing)."""
    return live_edges(4, NB201_EDGES, [op != "none" for op in ops])


class NB201Featurizer:
    """NB201 cells: edge one-hots as written and as live, live-op counts and costs; the graph has a node per edge."""

    space = "nb201"

    def encode(self, item: Any) -> ArchFeatures:
        ops = parse_nb201(item) if isinstance(item, str) else tuple(item)
        live = nb201_live_edges(ops)
        effective = [op if alive else "none" for op, alive in zip(ops, live, strict=True)]
        written = np.zeros((6, len(NB201_OPS)))
        used = np.zeros((6, len(NB201_OPS)))
        for k, (op, eff) in enumerate(zip(ops, effective, strict=True)):
            written[k, NB201_OPS.index(op)] = 1.0
            used[k, NB201_OPS.index(eff)] = 1.0
        counts = used.sum(axis=0)
        costs = np.array([_nb201_op_cost(op) for op in effective]).sum(axis=0)
        inputs = [sum(1 for k, (_, j) in enumerate(NB201_EDGES) if j == node and live[k]) for node in (1, 2, 3)]
        vector = np.concatenate([written.ravel(), used.ravel(), counts, [_log_cost(c) for c in costs],
                                 inputs, [float(any(live))]])
        # Graph: input, one node per edge op, output (op-on-node, as BRP-NAS draws a cell).
        n = 8
        nodes = np.zeros((n, len(_NB201_NODE_KINDS) + 3))
        nodes[0, 0] = nodes[n - 1, len(_NB201_NODE_KINDS) - 1] = 1.0
        adjacency = np.zeros((n, n))
        for k, ((i, j), op) in enumerate(zip(NB201_EDGES, effective, strict=True)):
            nodes[k + 1, 1 + NB201_OPS.index(op)] = 1.0
            nodes[k + 1, len(_NB201_NODE_KINDS):] = [_log_cost(c) for c in _nb201_op_cost(op)]
            if i == 0:
                adjacency[0, k + 1] = 1.0
            for m, (src, _) in enumerate(NB201_EDGES):
                if src == j:
                    adjacency[k + 1, m + 1] = 1.0
            if j == 3:
                adjacency[k + 1, n - 1] = 1.0
        return ArchFeatures(vector, nodes, adjacency)


# FBNet's 22 layers in its seven stages (channels out, layers, stride at the stage's first layer), CIFAR input.
_FBNET_STAGES = ((16, 1, 1), (24, 4, 1), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
_FBNET_STEM = (16, 32)  # channels, pixels per side after the stem


def _fbnet_layout() -> list[tuple[int, int, int, int]]:
    """(channels in, channels out, stride, input side) of each of the 22 layers."""
    layout, c_in, side = [], _FBNET_STEM[0], _FBNET_STEM[1]
    for c_out, count, stride in _FBNET_STAGES:
        for n in range(count):
            s = stride if n == 0 else 1
            layout.append((c_in, c_out, s, side))
            side //= s
            c_in = c_out
    return layout


def _fbnet_layer_cost(choice: str, c_in: int, c_out: int, stride: int, side: int) -> tuple[float, float, float]:
    """MACs, parameters and output activations of an inverted residual block by formula (skip: none)."""
    if choice == "skip":
        return 0.0, 0.0, 0.0
    kernel, expand = int(choice[1]), int(choice.split("_")[1][1:])
    groups = 2 if choice.endswith("_g2") else 1
    mid, out_side = c_in * expand, side // stride
    expand_macs = c_in * mid * side * side / groups if expand > 1 else 0.0
    depthwise = mid * kernel * kernel * out_side * out_side
    project = mid * c_out * out_side * out_side / groups
    params = (c_in * mid / groups if expand > 1 else 0.0) + mid * kernel * kernel + mid * c_out / groups
    return expand_macs + depthwise + project, params, float(mid * out_side * out_side + c_out * out_side * out_side)


class FBNetFeaturizer:
    """FBNet chains: per-layer one-hots and costs; the graph is the chain with the layer's position in its node."""

    space = "fbnet"
    _layout = _fbnet_layout()

    def encode(self, item: Any) -> ArchFeatures:
        layers = parse_fbnet(item)
        onehot = np.zeros((len(layers), len(FBNET_CHOICES)))
        costs = np.zeros((len(layers), 3))
        for k, (choice, shape) in enumerate(zip(layers, self._layout, strict=True)):
            onehot[k, FBNET_CHOICES.index(choice)] = 1.0
            costs[k] = _fbnet_layer_cost(choice, *shape)
        logs = np.vectorize(_log_cost)(costs)
        totals = [_log_cost(x) for x in costs.sum(axis=0)]
        vector = np.concatenate([onehot.ravel(), logs[:, 0], onehot.sum(axis=0), totals])
        n = len(layers) + 2
        position = np.zeros((n, 1))
        position[1:-1, 0] = np.arange(len(layers)) / len(layers)
        kinds = np.zeros((n, len(FBNET_CHOICES) + 2))
        kinds[0, -2] = kinds[-1, -1] = 1.0
        kinds[1:-1, : len(FBNET_CHOICES)] = onehot
        cost_cols = np.zeros((n, 3))
        cost_cols[1:-1] = logs
        adjacency = np.eye(n, k=1)
        return ArchFeatures(vector, np.hstack([kinds, position, cost_cols]), adjacency)


class SpaceFeaturizer:
    """A typed space's architectures: its encoding plus per-node costs; the latency table's sum when given."""

    def __init__(self, space: SearchSpace, table_ms: Callable[[Architecture], float | None] | None = None) -> None:
        self.space_def = space
        self.space = space.name
        self.table_ms = table_ms
        self._ops = sorted({c.op for slot in space.slots for c in slot.candidates})

    def encode(self, item: Any) -> ArchFeatures:
        if not isinstance(item, Architecture):
            item = self.space_def.architecture_from_json(item)
        graph = item.graph()
        names = list(graph.nodes)
        index = {name: k for k, name in enumerate(names)}
        outputs = {t.slot: t.output.dims() for t in item.typing()}
        nodes = np.zeros((len(names), len(self._ops) + 5))
        by_op = np.zeros((len(self._ops), 3))
        for k, name in enumerate(names):
            data = graph.nodes[name]
            if "op" not in data:
                nodes[k, len(self._ops) + (0 if k == 0 else 1)] = 1.0
                continue
            op = self._ops.index(data["op"]) if data["op"] in self._ops else None
            # a cell's sum nodes carry no cost; a cell edge's operator node names its slot
            cost = (float(data.get("macs", 0.0)), float(data.get("n_params", 0.0)),
                    float(np.prod(outputs.get(data.get("slot", name), (0,)))))
            nodes[k, len(self._ops) + 2:] = [_log_cost(c) for c in cost]
            if op is not None:
                nodes[k, op] = 1.0
                by_op[op] += cost
        adjacency = np.zeros((len(names), len(names)))
        for a, b in graph.edges:
            adjacency[index[a], index[b]] = 1.0
        table = self.table_ms(item) if self.table_ms is not None else None
        table_log = [math.log(table) if table and table > 0 else 0.0, float(bool(table))]
        vector = np.concatenate([np.asarray(self.space_def.encode(item), dtype=float),
                                 np.vectorize(_log_cost)(by_op).ravel() if by_op.size else [],
                                 [_log_cost(item.macs()), _log_cost(item.params())], table_log])
        return ArchFeatures(vector, nodes, adjacency)


def featurizer_for(space: str) -> LatencyFeaturizer:
    """The featurizer of a published space (``nb201`` or ``fbnet``); SpecError names the known ones."""
    if space == "nb201":
        return NB201Featurizer()
    if space == "fbnet":
        return FBNetFeaturizer()
    raise SpecError(f"no latency featurizer for space {space!r}; known: nb201, fbnet, or a typed search space")
