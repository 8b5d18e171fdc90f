"""How a search progressed, trial by trial: hypervolume of the feasible front and the best value under budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from archetype.objectives import Constraint, Direction, Objective


@dataclass(frozen=True)
class ProgressPoint:
    """After trial ``number``: the hypervolume of the feasible front so far and the best primary value under budget."""

    number: int
    hypervolume: float | None  # None until a feasible trial has both objectives, or with fewer than two objectives
    best: float | None  # best value of the study's first objective among feasible trials so far


@dataclass(frozen=True)
class SearchProgress:
    """The progress series of a study, with the objectives and reference point the hypervolume is measured to."""

    points: list[ProgressPoint]
    best_objective: str | None
    hypervolume_objectives: list[str]
    reference: dict[str, float]  # in the objectives' own units


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area that ``points`` (both coordinates minimized) dominate, bounded by ``reference``."""
    inside = sorted(p for p in points if p[0] < reference[0] and p[1] < reference[1])
    area, lowest = 0.0, reference[1]
    for x, y in inside:
        if y < lowest:
            area += (reference[0] - x) * (lowest - y)
            lowest = y
    return area


def is_feasible(trial: Any, constraints: Sequence[Constraint]) -> bool:
    """A complete trial that meets every constraint (what ``feasible_front`` keeps)."""
    complete = getattr(trial.state, "value", trial.state) == "complete"
    return complete and all(c.satisfied(trial.values) for c in constraints)


def search_progress(
    trials: Sequence[Any], objectives: Sequence[Objective], constraints: Sequence[Constraint]
) -> SearchProgress:
    """The progress series over ``trials`` (ordered by number) for the study's first two objectives."""
    feasible = [t for t in trials if is_feasible(t, constraints)]
    primary = objectives[0] if objectives else None
    pair = list(objectives[:2]) if len(objectives) >= 2 else []
    reference = _reference(feasible, pair, constraints) if pair else None
    front: list[tuple[float, float]] = []
    hypervolume: float | None = None
    best: float | None = None
    points = []
    for trial in trials:
        if is_feasible(trial, constraints):
            if primary is not None and primary.name in trial.values:
                value = trial.values[primary.name]
                best = value if best is None or primary.better(value, best) else best
            if reference is not None and all(o.name in trial.values for o in pair):
                point = (_minimized(pair[0], trial.values), _minimized(pair[1], trial.values))
                if not any(q[0] <= point[0] and q[1] <= point[1] for q in front):
                    front = [q for q in front if not (point[0] <= q[0] and point[1] <= q[1])] + [point]
                    hypervolume = hypervolume_2d(front, reference)
        points.append(ProgressPoint(trial.number, hypervolume, best))
    shown = {} if reference is None else {o.name: _unminimized(o, r) for o, r in zip(pair, reference)}
    return SearchProgress(points, primary.name if primary else None, [o.name for o in pair], shown)


def _reference(
    feasible: Sequence[Any], pair: Sequence[Objective], constraints: Sequence[Constraint]
) -> tuple[float, float] | None:
    """Per objective: its constraint's bound where one limits it from the bad side, else the worst feasible value."""
    reference = []
    for objective in pair:
        wanted_op = "<=" if objective.direction is Direction.MINIMIZE else ">="
        bounds = [c.bound for c in constraints if c.name == objective.name and c.op == wanted_op]
        if bounds:
            bound = min(bounds) if wanted_op == "<=" else max(bounds)
            reference.append(_minimized(objective, {objective.name: bound}))
            continue
        seen = [_minimized(objective, t.values) for t in feasible if objective.name in t.values]
        if not seen:
            return None
        reference.append(max(seen))
    return reference[0], reference[1]


def _minimized(objective: Objective, values: Mapping[str, float]) -> float:
    value = values[objective.name]
    return value if objective.direction is Direction.MINIMIZE else -value


def _unminimized(objective: Objective, value: float) -> float:
    return value if objective.direction is Direction.MINIMIZE else -value
