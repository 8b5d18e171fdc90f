"""Cells: typed DAGs inside a space, and the cell spaces built from a fixed skeleton around them.

A cell's node 0 receives the cell's input and its last node is its output; every other node sums its
incoming edges. Each edge is a slot that chooses an operator from a type category, so the type checker
checks every edge, and a strategy sees a cell space as plain slots (one per edge of each distinct cell).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace.architecture import INPUT, Architecture, Choice
from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.types import TensorType

if TYPE_CHECKING:
    import networkx as nx

    from archetype.searchspace.typecheck import SlotTyping

MAX_CELL_NODES = 16


@dataclass(frozen=True)
class Cell:
    """A DAG of ``nodes`` nodes whose ``edges`` (i, j), i < j, each choose an operator among ``candidates``."""

    name: str
    nodes: int
    edges: tuple[tuple[int, int], ...]
    candidates: tuple[Candidate, ...]
    categories: tuple[str, ...] = ("shape-preserving",)

    def __post_init__(self) -> None:
        if not 2 <= self.nodes <= MAX_CELL_NODES:
            raise SpecError(f"cell '{self.name}': nodes must be 2..{MAX_CELL_NODES}, got {self.nodes}")
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

    def slots(self) -> tuple[Slot, ...]:
        return tuple(Slot(self.edge_slot(e), self.candidates, self.categories) for e in self.edges)


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
    ops: tuple[SlotTyping, ...]  # one per fixed operator, or one per cell edge in the cell's edge order


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
        placed: dict[tuple[str | None, TensorType], tuple[tuple[SlotTyping, ...], TensorType]] = {}
        for piece in self.skeleton:
            if piece.choice is not None:
                t = _typed(x, piece.choice, ())
                typed.append(PieceTyping(piece, x, t.output, (t,)))
                x = t.output
                continue
            if (piece.cell, x) in placed:  # the same cell at the same type types the same way
                ops, out = placed[(piece.cell, x)]
                typed.append(PieceTyping(piece, x, out, ops))
                x = out
                continue
            cell = self.cell(piece.cell or "")
            nodes: dict[int, TensorType] = {0: x}
            ops = []
            for i, j in sorted(cell.edges, key=lambda e: (e[1], e[0])):
                slot = cell.edge_slot((i, j))
                if slot not in chosen:
                    raise SpecError(f"space '{self.name}': the architecture has no choice for edge '{slot}'")
                t = _typed(nodes[i], chosen[slot], cell.categories)
                if nodes.setdefault(j, t.output) != t.output:
                    raise TypeCheckError(
                        f"cell '{piece.name}': edge '{slot}' produces {t.output}, but node {j} already holds {nodes[j]}"
                    )
                ops.append(t)
            order = {e: k for k, e in enumerate(cell.edges)}
            ops.sort(key=lambda t: order[_edge_of(t.slot)])
            out = nodes[cell.nodes - 1]
            placed[(piece.cell, x)] = (tuple(ops), out)
            typed.append(PieceTyping(piece, x, out, tuple(ops)))
            x = out
        if self.output is not None and x != self.output:
            last = self.skeleton[-1].name
            raise TypeCheckError(f"piece '{last}' produces {x}, but the space's output type is {self.output}")
        return typed

    def encode(self, arch: Architecture) -> list[float]:
        """A graph encoding: each cell's adjacency (upper triangle, an edge counts unless it is ``zero``), then a
        one-hot of every edge's operator (with its values) among its slot's alternatives."""
        chosen = {c.slot: c for c in arch.choices}
        vec: list[float] = []
        for cell in self.cells:
            present = {e for e in cell.edges if chosen[cell.edge_slot(e)].op != "zero"}
            vec += [1.0 if (i, j) in present else 0.0 for i, j in itertools.combinations(range(cell.nodes), 2)]
        for slot in self.slots:
            picked = chosen[slot.name]
            vec += [1.0 if alt == (picked.op, picked.params) else 0.0 for alt in slot_alternatives(slot)]
        return vec

    def graph(self, arch: Architecture) -> nx.DiGraph:
        """The whole network: fixed pieces as nodes, each placed cell's nodes as ``piece/n<j>``, and every cell
        edge as a graph edge carrying its operator (``kind="cell"``)."""
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
            for t in pt.ops:
                i, j = _edge_of(t.slot)
                g.add_edge(names[i], names[j], op=t.choice.op, params=dict(t.choice.params), slot=t.slot,
                           category=t.category, n_params=t.params, macs=t.macs, kind="cell")
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


def slot_alternatives(slot: Slot) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Every (operator, sorted values) a slot may take, in a fixed order."""
    alts = []
    for cand in slot.candidates:
        names = [n for n, _ in cand.domain]
        for values in itertools.product(*(v for _, v in cand.domain)):
            alts.append((cand.op, tuple(zip(names, values, strict=True))))
    return alts


def _edge_of(slot: str) -> tuple[int, int]:
    i, j = slot.rsplit(".edge", 1)[1].split("_")
    return int(i), int(j)


class CellModule(nn.Module):
    """One placed cell: node j is the sum of its incoming edges' operators applied to earlier nodes."""

    def __init__(self, cell: Cell, ops: tuple[SlotTyping, ...]) -> None:
        super().__init__()
        self.edges = [_edge_of(t.slot) for t in ops]
        self.last = cell.nodes - 1
        self.ops = nn.ModuleList(t.choice.operator().build(t.input) for t in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: dict[int, torch.Tensor] = {0: x}
        for (i, j), op in sorted(zip(self.edges, self.ops, strict=True), key=lambda e: e[0][1]):
            y = op(nodes[i])
            nodes[j] = y if j not in nodes else nodes[j] + y
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
                self.pieces[name] = CellModule(cells[pt.piece.cell or ""], pt.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for piece in self.pieces.values():
            x = piece(x)
        return x
