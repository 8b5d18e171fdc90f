"""Pareto fronts over named objective values, and the one definition of a study's feasible trials and hypervolume.

The hypervolume of a study is measured up to one reference point (``hypervolume_reference``): per
objective, the bound of the constraint that limits it from the bad side (``latency_ms<=2`` gives
2 ms), else the objective's worst value among the study's complete trials. ``archetype front``,
the dashboard and its progress curve all use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from archetype.objectives import Constraint, Direction, Objective, within_budget


def dominates(a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[Objective]) -> bool:
    """True when ``a`` is at least as good as ``b`` on every objective and better on one."""
    strictly = False
    for obj in objectives:
        x, y = a[obj.name], b[obj.name]
        if obj.direction is Direction.MINIMIZE:
            x, y = -x, -y
        if x < y:
            return False
        strictly = strictly or x > y
    return strictly


def pareto_front(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> list[int]:
    """Indices of the non-dominated points, in input order; points missing an objective are left out.

    One pass keeps a point unless a point kept so far dominates it, and drops the kept points it
    dominates (dominance is transitive), so the cost grows with the front, not with all pairs.
    """
    names = [o.name for o in objectives]
    front: list[int] = []
    for i, point in enumerate(points):
        if not all(n in point for n in names) or any(dominates(points[j], point, objectives) for j in front):
            continue
        front = [j for j in front if not dominates(point, points[j], objectives)]
        front.append(i)
    return front


def is_feasible(trial: Any, constraints: Sequence[Constraint]) -> bool:
    """A complete trial within budget (``trial`` has ``state`` and ``values``: a store record or a result)."""
    return getattr(trial.state, "value", trial.state) == "complete" and within_budget(trial.values, constraints)


def feasible_front(trials: Sequence, objectives: Sequence[Objective], constraints: Sequence = ()) -> list:
    """The complete trials that meet every constraint and no other such trial dominates.

    ``trials`` are objects with ``state`` and ``values`` (store records or results).
    """
    feasible = [t for t in trials if is_feasible(t, constraints)]
    return [feasible[i] for i in pareto_front([t.values for t in feasible], objectives)]


def _minimized(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
    """(N, M) array with every objective turned into one to minimize."""
    signs = np.array([-1.0 if o.direction is Direction.MAXIMIZE else 1.0 for o in objectives])
    if not points:
        return np.zeros((0, len(objectives)))
    return np.array([[p[o.name] for o in objectives] for p in points], dtype=float) * signs


def nondominated_ranks(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> list[int]:
    """Non-dominated sorting: rank 0 for the front, 1 for the front once rank 0 is removed, and so on."""
    return nondominated_ranks_array(_minimized(points, objectives)).tolist()


def nondominated_ranks_array(costs: np.ndarray) -> np.ndarray:
    """Ranks of the rows of an (N, M) array of values to minimize (fast non-dominated sort)."""
    n = len(costs)
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    le = np.all(costs[:, None, :] <= costs[None, :, :], axis=2)
    lt = np.any(costs[:, None, :] < costs[None, :, :], axis=2)
    dominated_by = (le & lt).T  # dominated_by[i, j]: j dominates i
    remaining = np.ones(n, dtype=bool)
    rank = 0
    while remaining.any():
        front = remaining & ~np.any(dominated_by & remaining[None, :], axis=1)
        ranks[front] = rank
        remaining &= ~front
        rank += 1
    return ranks


def crowding_distances(costs: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row of one front (infinite at the extremes)."""
    n, m = costs.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(costs[:, k], kind="stable")
        span = costs[order[-1], k] - costs[order[0], k]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (costs[order[2:], k] - costs[order[:-2], k]) / span
    return distance


def hypervolume(
    points: Sequence[Mapping[str, float]], objectives: Sequence[Objective], reference: Mapping[str, float]
) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (a point worse than all on every objective)."""
    costs = _minimized(points, objectives)
    ref = _minimized([reference], objectives)[0]
    inside = costs[np.all(costs < ref, axis=1)] if len(costs) else costs
    if len(inside) == 0:
        return 0.0
    return float(_hypervolume_library(inside, ref))


def knee_point(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> int | None:
    """Index of the front point farthest from the line (hyperplane) through the front's extremes,
    after scaling each objective to [0, 1]; None without points."""
    front = pareto_front(points, objectives)
    if not front:
        return None
    if len(front) <= 2:
        return front[0]
    costs = _minimized([points[i] for i in front], objectives)
    low, high = costs.min(axis=0), costs.max(axis=0)
    scaled = (costs - low) / np.where(high > low, high - low, 1.0)
    # distance below the plane sum(x) = 1 through the unit extremes: the knee bulges most towards the ideal point
    gain = 1.0 - scaled.sum(axis=1)
    return front[int(np.argmax(gain))]


@dataclass(frozen=True)
class FrontSummary:
    """The feasible front of a set of trials, with its knee and the hypervolume it dominates."""

    front: list[Any]  # feasible non-dominated complete trials, ordered by the first objective
    knee: Any | None  # the front's knee trial
    hypervolume: float  # dominated volume up to ``reference``
    reference: dict[str, float]  # the study's reference point (``hypervolume_reference``)
    ranks: dict[int, int]  # trial number -> non-dominated rank among the feasible complete trials


def summarise_front(
    trials: Sequence[Any], objectives: Sequence[Objective], constraints: Sequence[Any] = ()
) -> FrontSummary:
    """Front, knee, hypervolume and ranks of stored trials (objects with ``number``, ``state``, ``values``)."""
    names = [o.name for o in objectives]
    complete = [
        t for t in trials
        if getattr(t.state, "value", t.state) == "complete" and all(n in t.values for n in names)
    ]
    feasible = [t for t in complete if is_feasible(t, constraints)]
    ranks = nondominated_ranks([t.values for t in feasible], objectives)
    front = sorted((t for t, r in zip(feasible, ranks, strict=True) if r == 0), key=lambda t: t.values[names[0]])
    reference = hypervolume_reference(complete, objectives, constraints)
    knee = knee_point([t.values for t in front], objectives)
    volume = hypervolume([t.values for t in front], objectives, reference) if front and reference else 0.0
    return FrontSummary(
        front, None if knee is None else front[knee], volume, reference,
        {t.number: r for t, r in zip(feasible, ranks, strict=True)},
    )


def hypervolume_reference(
    trials: Sequence[Any], objectives: Sequence[Objective], constraints: Sequence[Constraint] = ()
) -> dict[str, float]:
    """The study's reference point: per objective, the bound of a constraint that limits it from the bad side,
    else its worst value among the complete ``trials``; empty when an objective has neither."""
    reference = {}
    for objective in objectives:
        bad_side = "<=" if objective.direction is Direction.MINIMIZE else ">="
        bounds = [c.bound for c in constraints if c.name == objective.name and c.op == bad_side]
        if bounds:
            reference[objective.name] = min(bounds) if bad_side == "<=" else max(bounds)
            continue
        seen = [
            t.values[objective.name] for t in trials
            if getattr(t.state, "value", t.state) == "complete" and objective.name in t.values
        ]
        if not seen:
            return {}
        reference[objective.name] = min(seen) if objective.direction is Direction.MAXIMIZE else max(seen)
    return reference


def _hypervolume_library(costs: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume of minimised ``costs`` up to ``reference``, by moocore."""
    import moocore

    return float(moocore.hypervolume(costs, ref=reference))
