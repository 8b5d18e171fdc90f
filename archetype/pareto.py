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
    """Indices of the non-dominated points, in input order; points missing an objective are left out."""
    names = [o.name for o in objectives]
    usable = [i for i, p in enumerate(points) if all(n in p for n in names)]
    return [
        i for i in usable
        if not any(dominates(points[j], points[i], objectives) for j in usable if j != i)
    ]


def feasible_front(trials: Sequence, objectives: Sequence[Objective], constraints: Sequence = ()) -> list:
    """The complete trials that meet every constraint and no other such trial dominates.

    ``trials`` are objects with ``state`` and ``values`` (store records or results).
    """
    feasible = [
        t for t in trials
        if getattr(t.state, "value", t.state) == "complete" and all(c.satisfied(t.values) for c in constraints)
    ]
    return [feasible[i] for i in pareto_front([t.values for t in feasible], objectives)]
