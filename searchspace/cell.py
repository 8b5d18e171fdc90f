"""Cells: typed DAGs inside a space, and the cell spaces built from a fixed skeleton around them.

A cell's node 0 receives the cell's input and its last node is its output; every other node sums its
incoming edges. Each edge is a slot that chooses an operator from a type category, so the type checker
checks every edge, and a strategy sees a cell space as plain slots (one per edge of each distinct cell).
Either the edges are fixed (NB201: every edge i -> j, one of which may be ``zero``), or each intermediate
node chooses ``inputs`` edges, each with its operator and its ``source`` node (DARTS); the output node then
sums every intermediate node.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace.architecture import INPUT, Architecture, Choice
from archetype.searchspace.operator import SOURCE
from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.types import TensorType

if TYPE_CHECKING:
    import networkx as nx

    from archetype.searchspace.typecheck import SlotTyping

MAX_CELL_NODES = 16


@dataclass(frozen=True)
class Cell:
    """A DAG of ``nodes`` nodes whose ``edges`` (i, j), i < j, each choose an operator among ``candidates``;
    with ``inputs`` > 0 the edges are searched instead: each intermediate node takes that many, from any
    earlier node."""

    name: str
    nodes: int
    edges: tuple[tuple[int, int], ...]
    candidates: tuple[Candidate, ...]
    categories: tuple[str, ...] = ("shape-preserving",)
    inputs: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.nodes <= MAX_CELL_NODES:
            raise SpecError(f"cell '{self.name}': nodes must be 2..{MAX_CELL_NODES}, got {self.nodes}")
        if self.inputs:
            if self.edges or self.nodes < 3 or not 1 <= self.inputs <= MAX_CELL_NODES:
                raise SpecError(f"cell '{self.name}': a cell that searches its inputs has no fixed edges, at least "
                                f"one intermediate node, and 1..{MAX_CELL_NODES} inputs per node")
            return
        for i, j in self.edges:
            if not 0 <= i < j < self.nodes:
                raise SpecError(f"cell '{self.name}': edge {i}->{j} must join node i to a later node j < {self.nodes}")
        if len(set(self.edges)) != len(self.edges):
            raise SpecError(f"cell '{self.name}': an edge appears twice")
        fed = {j for _, j in self.edges}
        missing = [j for j in range(1, self.nodes) if j not in fed]
        if missing:
            raise SpecError(f"cell '{self.name}': node {missing[0]} has no incoming edge")

    def edge_slot(self, edge: tuple[int, int]) -> str:
        return f"{self.name}.edge{edge[0]}_{edge[1]}"

    def input_slot(self, node: int, k: int) -> str:
        return f"{self.name}.node{node}.in{k}"

    def slots(self) -> tuple[Slot, ...]:
        if not self.inputs:
            return tuple(Slot(self.edge_slot(e), self.candidates, self.categories) for e in self.edges)
        return tuple(
            Slot(self.input_slot(j, k), tuple(
                Candidate(c.op, tuple(sorted((*c.domain, (SOURCE, tuple(range(j))))))) for c in self.candidates
            ), self.categories)
            for j in range(1, self.nodes - 1) for k in range(self.inputs)
        )

    def edge_list(self, chosen: Mapping[str, Choice]) -> list[tuple[str, tuple[int, int]]]:
        """(slot, (from node, to node)) of every edge, in slot order; a searched input's node is its ``source``."""
        if not self.inputs:
            return [(self.edge_slot(e), e) for e in self.edges]
        edges = []
        for j in range(1, self.nodes - 1):
            for k in range(self.inputs):
                slot = self.input_slot(j, k)
                source = dict(chosen[slot].params).get(SOURCE) if slot in chosen else None
                if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < j:
                    raise SpecError(f"cell '{self.name}': slot '{slot}' needs a source node among {list(range(j))}, "
                                    f"got {source!r}")
                edges.append((slot, (source, j)))
        return edges


@dataclass(frozen=True)
class Piece:
    """One step of a cell space's skeleton: a fixed operator, or a placement of a cell by name."""

    name: str
    choice: Choice | None = None
    cell: str | None = None

    @classmethod
    def fixed(cls, name: str, op: str, params: Mapping[str, Any] | None = None) -> Piece:
        return cls(name, Choice.of(name, op, params or {}))

    @classmethod
    def of_cell(cls, name: str, cell: str) -> Piece:
        return cls(name, cell=cell)


@dataclass(frozen=True)
class PieceTyping:
    """What one skeleton piece receives and produces, with the typing of each operator in it."""

    piece: Piece
    input: TensorType
    output: TensorType
    ops: tuple[SlotTyping, ...]  # one per fixed operator, or one per cell edge in the cell's slot order
    edges: tuple[tuple[int, int], ...] = ()  # a cell's edges (from node, to node), parallel to ``ops``


@dataclass(frozen=True)
class CellSpace(SearchSpace):
    """A fixed skeleton of operators and cell placements; the searched slots are the cells' edges.

    ``macro`` names the space and its arguments; an architecture keeps it, so its key tells two skeletons
    apart and ``Architecture.from_json`` can rebuild the space without being given it.
    """

    cells: tuple[Cell, ...] = ()
    skeleton: tuple[Piece, ...] = ()
    macro: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(
        cls, name: str, input: TensorType, output: TensorType | None, cells: tuple[Cell, ...],
        skeleton: tuple[Piece, ...], macro: Mapping[str, Any], description: str = "",
    ) -> CellSpace:
        """A cell space whose slots are the edges of ``cells``, in order."""
        names = [c.name for c in cells]
        if len(set(names)) != len(names):
            raise SpecError(f"space '{name}': a cell name appears twice")
        for piece in skeleton:
            if (piece.choice is None) == (piece.cell is None):
                raise SpecError(f"space '{name}': piece '{piece.name}' needs exactly one of an operator or a cell")
            if piece.cell is not None and piece.cell not in names:
                raise SpecError(f"space '{name}': piece '{piece.name}' places unknown cell '{piece.cell}'")
        slots = tuple(s for c in cells for s in c.slots())
        return cls(name, input, output, slots, description, cells=cells, skeleton=skeleton,
                   macro=tuple(sorted(macro.items())))

    def architecture(self, choices: tuple[Choice, ...]) -> Architecture:
        return Architecture(self.input, choices, self, (), self.macro)

    def validate(self, arch: Architecture) -> Architecture:
        if arch.macro != self.macro:
            raise SpecError(f"space '{self.name}' has skeleton {dict(self.macro)}, architecture has {dict(arch.macro)}")
        return super().validate(arch)

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)

    def piece_typing(self, arch: Architecture) -> list[PieceTyping]:
        """The type every piece and every cell edge receives and produces; TypeCheckError names the edge."""
        chosen = {c.slot: c for c in arch.choices}
        x = self.input
        typed: list[PieceTyping] = []
        placed: dict[tuple[str | None, TensorType], tuple[tuple[SlotTyping, ...], TensorType, tuple]] = {}
        for piece in self.skeleton:
            if piece.choice is not None:
                t = _typed(x, piece.choice, ())
                typed.append(PieceTyping(piece, x, t.output, (t,)))
                x = t.output
                continue
            if (piece.cell, x) in placed:  # the same cell at the same type types the same way
                ops, out, edges = placed[(piece.cell, x)]
                typed.append(PieceTyping(piece, x, out, ops, edges))
                x = out
                continue
            cell = self.cell(piece.cell or "")
            missing = [s.name for s in cell.slots() if s.name not in chosen]
            if missing:
                raise SpecError(f"space '{self.name}': the architecture has no choice for edge '{missing[0]}'")
            listed = cell.edge_list(chosen)
            nodes: dict[int, TensorType] = {0: x}
            typed_edges: dict[str, SlotTyping] = {}
            for slot, (i, j) in sorted(listed, key=lambda e: (e[1][1], e[1][0])):
                t = _typed(nodes[i], chosen[slot], cell.categories)
                if nodes.setdefault(j, t.output) != t.output:
                    raise TypeCheckError(
                        f"cell '{piece.name}': edge '{slot}' produces {t.output}, but node {j} already holds {nodes[j]}"
                    )
                typed_edges[slot] = t
            if cell.inputs:  # the output node sums every intermediate node
                kinds = {nodes[j] for j in range(1, cell.nodes - 1)}
                if len(kinds) != 1:
                    raise TypeCheckError(f"cell '{piece.name}': its intermediate nodes hold {sorted(map(str, kinds))}, "
                                         "which cannot be summed")
                nodes[cell.nodes - 1] = kinds.pop()
            ops, edges = tuple(typed_edges[s] for s, _ in listed), tuple(e for _, e in listed)
            out = nodes[cell.nodes - 1]
            placed[(piece.cell, x)] = (ops, out, edges)
            typed.append(PieceTyping(piece, x, out, ops, edges))
            x = out
        if self.output is not None and x != self.output:
            last = self.skeleton[-1].name
            raise TypeCheckError(f"piece '{last}' produces {x}, but the space's output type is {self.output}")
        return typed

    def encode(self, arch: Architecture) -> list[float]:
        """A graph encoding: each cell's adjacency (upper triangle, an edge counts unless it is ``zero``), then a
        one-hot of every edge's operator (with its values) among its slot's alternatives, then per cell whether
        nothing flows from its input to its output (no ``live_edges``): such a cell makes the network's output
        a constant, which a compiler folds away, so its latency is of another kind than its operators say."""
        chosen = {c.slot: c for c in arch.choices}
        vec: list[float] = []
        passes: list[float] = []
        for cell in self.cells:
            listed = cell.edge_list(chosen)
            real = [chosen[s].op != "zero" for s, _ in listed]
            present = {e for (_, e), r in zip(listed, real, strict=True) if r}
            vec += [1.0 if (i, j) in present else 0.0 for i, j in itertools.combinations(range(cell.nodes), 2)]
            live = live_edges(cell.nodes, [e for _, e in listed], real, sums_intermediates=bool(cell.inputs))
            passes.append(0.0 if any(live) else 1.0)
        for slot in self.slots:
            picked = chosen[slot.name]
            vec += [1.0 if alt == (picked.op, picked.params) else 0.0 for alt in slot_alternatives(slot)]
        return vec + passes

    def graph(self, arch: Architecture) -> nx.DiGraph:
        """The whole network: fixed pieces as nodes, each placed cell's nodes as ``piece/n<j>`` (``op="sum"``), and
        every cell edge as an operator node ``piece/<slot>`` between the two nodes it joins (``kind="cell"``)."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_node(INPUT, type=str(self.input))
        prev = INPUT
        for pt in self.piece_typing(arch):
            if pt.piece.choice is not None:
                (t,) = pt.ops
                g.add_node(pt.piece.name, op=t.choice.op, params=dict(t.choice.params), category=t.category,
                           n_params=t.params, macs=t.macs)
                g.add_edge(prev, pt.piece.name, type=str(t.input), kind="chain")
                prev = pt.piece.name
                continue
            cell = self.cell(pt.piece.cell or "")
            names = {0: prev, **{j: f"{pt.piece.name}/n{j}" for j in range(1, cell.nodes)}}
            for j in range(1, cell.nodes):
                g.add_node(names[j], op="sum", type=str(pt.output))
            for t, (i, j) in zip(pt.ops, pt.edges, strict=True):
                op_node = f"{pt.piece.name}/{t.slot}"
                g.add_node(op_node, op=t.choice.op, params=dict(t.choice.params), slot=t.slot, category=t.category,
                           n_params=t.params, macs=t.macs, kind="cell")
                g.add_edge(names[i], op_node, type=str(t.input), kind="cell")
                g.add_edge(op_node, names[j], type=str(t.output), kind="cell")
            if cell.inputs:
                for j in range(1, cell.nodes - 1):
                    g.add_edge(names[j], names[cell.nodes - 1], type=str(pt.output), kind="cell")
            prev = names[cell.nodes - 1]
        g.add_node("output", type=str(self.output))
        g.add_edge(prev, "output")
        return g

    def build(self, arch: Architecture) -> nn.Module:
        return CellNetwork(self.piece_typing(arch), {c.name: c for c in self.cells})


@functools.lru_cache(maxsize=4096)
def _typed(x: TensorType, choice: Choice, categories: tuple[str, ...]) -> SlotTyping:
    """One operator typed at ``x`` (cached: a cell space types the same few edges over and over)."""
    from archetype.searchspace.typecheck import infer_types

    (t,) = infer_types(x, (choice,), categories={choice.slot: categories} if categories else None)
    return t


def live_edges(
    nodes: int, edges: Sequence[tuple[int, int]], real: Sequence[bool], *, sums_intermediates: bool = False
) -> list[bool]:
    """Which of a cell's ``edges`` (i, j) carry data from node 0 to its last node: the ``real`` ones (not
    ``zero``) on such a path. With ``sums_intermediates`` the last node sums every intermediate node too."""
    order = sorted(range(len(edges)), key=lambda k: edges[k][1])
    reached = {0}
    for k in order:
        if real[k] and edges[k][0] in reached:
            reached.add(edges[k][1])
    last = nodes - 1
    reaching = {last, *(range(1, last) if sums_intermediates else ())}
    for k in sorted(range(len(edges)), key=lambda k: edges[k][0], reverse=True):
        if real[k] and edges[k][1] in reaching:
            reaching.add(edges[k][0])
    return [real[k] and i in reached and j in reaching for k, (i, j) in enumerate(edges)]


def slot_alternatives(slot: Slot) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Every (operator, sorted values) a slot may take, in a fixed order."""
    alts = []
    for cand in slot.candidates:
        names = [n for n, _ in cand.domain]
        for values in itertools.product(*(v for _, v in cand.domain)):
            alts.append((cand.op, tuple(zip(names, values, strict=True))))
    return alts


class CellModule(nn.Module):
    """One placed cell: node j is the sum of its incoming edges' operators applied to earlier nodes."""

    def __init__(self, cell: Cell, typed: PieceTyping) -> None:
        super().__init__()
        self.edges = list(typed.edges)
        self.last = cell.nodes - 1
        self.sum_intermediate = bool(cell.inputs)
        self.ops = nn.ModuleList(t.choice.operator().build(t.input) for t in typed.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: dict[int, torch.Tensor] = {0: x}
        for (i, j), op in sorted(zip(self.edges, self.ops, strict=True), key=lambda e: e[0][1]):
            y = op(nodes[i])
            nodes[j] = y if j not in nodes else nodes[j] + y
        if self.sum_intermediate:
            return torch.stack([nodes[j] for j in range(1, self.last)]).sum(dim=0)
        return nodes[self.last]


class CellNetwork(nn.Module):
    """A cell space's network: the skeleton's pieces in order, each placed cell with weights of its own."""

    def __init__(self, typed: list[PieceTyping], cells: Mapping[str, Cell]) -> None:
        super().__init__()
        self.input_type = typed[0].input
        self.output_type = typed[-1].output
        self.pieces = nn.ModuleDict()
        for pt in typed:
            name = pt.piece.name.replace(".", "_")
            if pt.piece.choice is not None:
                self.pieces[name] = pt.piece.choice.operator().build(pt.input)
            else:
                self.pieces[name] = CellModule(cells[pt.piece.cell or ""], pt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for piece in self.pieces.values():
            x = piece(x)
        return x
