"""``nb201``: the NAS-Bench-201 skeleton around one shared four-node cell of 6 searched edges (15,625 cells)."""

from __future__ import annotations

from archetype.errors import SpecError
from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.cell import Cell, CellSpace, Piece
from archetype.searchspace.nb201 import NB201_EDGES, NB201_OPERATORS, NB201_OPS, format_nb201, parse_nb201
from archetype.searchspace.space import Candidate
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector

CELL = "cell"
STAGES = 3
MAX_CELLS_PER_STAGE = 32
MAX_CHANNELS = 1024
_OPERATOR_TO_NB201 = {v: k for k, v in NB201_OPERATORS.items()}


def nb201_cell() -> Cell:
    """The NB201 cell: nodes 0..3, every edge i -> j one of the five NB201 operations, all shape-preserving."""
    return Cell(CELL, 4, NB201_EDGES, tuple(Candidate.of(NB201_OPERATORS[op]) for op in NB201_OPS))


@register_space("nb201")
def nb201_space(input_type: Image, num_classes: int, cells_per_stage: int = 5, channels: int = 16) -> CellSpace:
    """A 3x3 conv stem, three stages of ``cells_per_stage`` cells at ``channels`` x 1/2/4 joined by residual
    reductions, then batch norm, ReLU, global pooling and a linear classifier; every cell is the same cell."""
    for name, value, top in (("cells_per_stage", cells_per_stage, MAX_CELLS_PER_STAGE),
                             ("channels", channels, MAX_CHANNELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise SpecError(f"space 'nb201': {name} must be an integer 1..{top}, got {value!r}")
    pieces = [Piece.fixed("stem", "conv_bn_act", {"width": channels, "kernel": 3, "act": "none"})]
    for stage in range(1, STAGES + 1):
        if stage > 1:
            pieces.append(Piece.fixed(f"stage{stage}.reduce", "residual_reduction", {"width": channels << (stage - 1)}))
        pieces += [Piece.of_cell(f"stage{stage}.cell{k}", CELL) for k in range(1, cells_per_stage + 1)]
    pieces += [Piece.fixed("head.norm", "bn_act", {"act": "relu"}),
               Piece.fixed("head", "classifier_head", {"classes": num_classes})]
    return CellSpace.of(
        "nb201", input_type, Vector(num_classes), (nb201_cell(),), tuple(pieces),
        {"space": "nb201", "classes": num_classes, "cells_per_stage": cells_per_stage, "channels": channels},
        description="NAS-Bench-201: one 4-node cell of 6 edges (zero, identity, 1x1/3x3 ReLU-conv-BN, 3x3 avg "
        "pool) repeated in 3 stages with residual reductions",
    )


def nb201_architecture(space: CellSpace, text: str) -> Architecture:
    """The architecture of ``space`` (an ``nb201`` space) that an NB201 arch string names."""
    cell = space.cell(CELL)
    ops = parse_nb201(text)
    choices = tuple(Choice.of(cell.edge_slot(e), NB201_OPERATORS[op], {}) for e, op in zip(NB201_EDGES, ops,
                                                                                           strict=True))
    return space.validate(space.architecture(choices))


def nb201_string(arch: Architecture) -> str:
    """The NB201 arch string of an ``nb201`` architecture; SpecError for any other."""
    if dict(arch.macro).get("space") != "nb201":
        raise SpecError("only an architecture of the 'nb201' space has an NB201 arch string")
    chosen = {c.slot: c.op for c in arch.choices}
    cell = nb201_cell()
    try:
        return format_nb201([_OPERATOR_TO_NB201[chosen[cell.edge_slot(e)]] for e in NB201_EDGES])
    except KeyError as exc:
        raise SpecError(f"not an NB201 cell: no NB201 operation for {exc}") from None
