"""Pareto fronts over named objective values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from archetype.objectives import Direction, Objective


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


def feasible_front(trials: Sequence, objectives: Sequence[Objective], constraints: Sequence = ()) -> list:
    """The complete trials that meet every constraint and no other such trial dominates.

    ``trials`` are objects with ``state`` and ``values`` (store records or results).
    """
    feasible = [
        t for t in trials
        if getattr(t.state, "value", t.state) == "complete" and all(c.satisfied(t.values) for c in constraints)
    ]
    return [feasible[i] for i in pareto_front([t.values for t in feasible], objectives)]
