"""``darts``: a DARTS-style space: a normal and a reduction cell of 4 intermediate nodes, each taking two inputs."""

from __future__ import annotations

from archetype.errors import SpecError
from archetype.searchspace.cell import Cell, CellSpace, Piece
from archetype.searchspace.space import Candidate
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector

DARTS_OPERATORS = ("zero", "max_pool_3x3", "avg_pool_3x3", "identity", "sep_conv_3x3", "sep_conv_5x5",
                   "dil_conv_3x3", "dil_conv_5x5")
"""The eight DARTS operations (none, pools, skip, separable and dilated convolutions), as registered operators."""
INTERMEDIATE = 4
MAX_CELLS_PER_STAGE = 16
MAX_CHANNELS = 1024


def darts_cell(name: str) -> Cell:
    """Input node 0, intermediate nodes 1..4 each summing two searched edges from earlier nodes, output node 5."""
    return Cell(name, INTERMEDIATE + 2, (), tuple(Candidate.of(op) for op in DARTS_OPERATORS), inputs=2)


@register_space("darts")
def darts_space(input_type: Image, num_classes: int, cells_per_stage: int = 2, channels: int = 16) -> CellSpace:
    """A 3x3 stem, three stages of ``cells_per_stage`` normal cells; between stages a residual reduction to twice
    the channels followed by the reduction cell; then global pooling and a linear classifier.

    Unlike DARTS, every cell reads only the previous piece's output and its output node sums (not concatenates)
    the intermediate nodes; the reduction cell works at the reduced size, after a fixed strided block.
    """
    for label, value, top in (("cells_per_stage", cells_per_stage, MAX_CELLS_PER_STAGE),
                              ("channels", channels, MAX_CHANNELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise SpecError(f"space 'darts': {label} must be an integer 1..{top}, got {value!r}")
    pieces = [Piece.fixed("stem", "conv_bn_act", {"width": channels, "kernel": 3, "act": "none"})]
    for stage in range(1, 4):
        if stage > 1:
            pieces += [Piece.fixed(f"stage{stage}.reduce", "residual_reduction", {"width": channels << (stage - 1)}),
                       Piece.of_cell(f"stage{stage}.reduction", "reduction")]
        pieces += [Piece.of_cell(f"stage{stage}.cell{k}", "normal") for k in range(1, cells_per_stage + 1)]
    pieces += [Piece.fixed("head.norm", "bn_act", {"act": "relu"}),
               Piece.fixed("head", "classifier_head", {"classes": num_classes})]
    return CellSpace.of(
        "darts", input_type, Vector(num_classes), (darts_cell("normal"), darts_cell("reduction")), tuple(pieces),
        {"space": "darts", "classes": num_classes, "cells_per_stage": cells_per_stage, "channels": channels},
        description="DARTS-style: a normal and a reduction cell, 4 nodes of 2 searched inputs, 8 DARTS operators",
    )
