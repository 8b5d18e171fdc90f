"""How a search progressed, trial by trial: hypervolume of the feasible front and the best value under budget."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from archetype.objectives import Constraint, Objective
from archetype.pareto import dominates, hypervolume, hypervolume_reference, is_feasible


@dataclass(frozen=True)
class ProgressPoint:
    """After trial ``number``: the hypervolume of the feasible front so far and the best primary value under budget."""

    number: int
    hypervolume: float | None  # None until a feasible trial has every objective, or with fewer than two objectives
    best: float | None  # best value of the study's first objective among feasible trials so far


@dataclass(frozen=True)
class SearchProgress:
    """The progress series of a study, with the objectives and reference point the hypervolume is measured to."""

    points: list[ProgressPoint]  # a step series: the first trial, each trial that changed a value, and the last
    best_objective: str | None
    hypervolume_objectives: list[str]
    reference: dict[str, float]  # the study's one reference point (``archetype.pareto.hypervolume_reference``)


def search_progress(
    trials: Sequence[Any], objectives: Sequence[Objective], constraints: Sequence[Constraint],
    feasible: AbstractSet[int] | None = None,
) -> SearchProgress:
    """The progress over ``trials`` (ordered by number); its last hypervolume is what ``archetype front`` prints.

    ``feasible``: the numbers of the feasible trials where the caller has them already (else each is checked).
    """
    if feasible is None:
        feasible = {t.number for t in trials if is_feasible(t, constraints)}
    primary = objectives[0] if objectives else None
    measured = list(objectives) if len(objectives) >= 2 else []
    reference = hypervolume_reference(trials, measured, constraints) if measured else {}
    front: list[Any] = []
    volume: float | None = None
    best: float | None = None
    points = []
    for trial in trials:
        if trial.number in feasible:
            if primary is not None and primary.name in trial.values:
                value = trial.values[primary.name]
                best = value if best is None or primary.better(value, best) else best
            if reference and all(o.name in trial.values for o in measured):
                values = trial.values
                if not any(dominates(q, values, measured) or q == values for q in front):
                    front = [q for q in front if not dominates(values, q, measured)] + [values]
                    volume = hypervolume(front, measured, reference)
        if not points or (volume, best) != (points[-1].hypervolume, points[-1].best) or trial is trials[-1]:
            points.append(ProgressPoint(trial.number, volume, best))
    return SearchProgress(points, primary.name if primary else None, list(reference), reference)
