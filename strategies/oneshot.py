"""One-shot evolution: the study's aging evolution, ranking candidates by their supernet score.

The driver scores each asked architecture on a trained supernet (``scoring = "supernet"``) and tells
the result with ``supernet_accuracy`` (or ``accuracy``) and the constrained values (a predicted
``latency_ms``). Parents are chosen as in ``evolution``, on that one score: a candidate breaking a
constraint never beats a feasible one.
"""

from __future__ import annotations

from typing import Any

from archetype.objectives import Direction, Objective
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.strategies.base import register_strategy
from archetype.strategies.evolution import RegularizedEvolution

SCORE = Objective("accuracy", Direction.MAXIMIZE)
"""What a parent is ranked on: the supernet score, told as ``supernet_accuracy``, or a measured accuracy."""


@register_strategy("oneshot")
class OneShotEvolution(RegularizedEvolution):
    """Aging evolution on supernet scores: random until ``population`` are told, then mutants of tournament winners."""

    scoring = "supernet"

    def __init__(self, *args: Any, population: int = 16, sample: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, population=population, sample=sample, **kwargs)
        self.objectives = (SCORE,)

    def tell(self, arch: Architecture, result: Result) -> None:
        values = dict(result.values)
        if "supernet_accuracy" in values:
            values[SCORE.name] = values.pop("supernet_accuracy")
        super().tell(arch, Result(result.state, values, result.error, result.timings, result.target))
