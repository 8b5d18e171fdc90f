"""Pareto fronts with mixed directions and constraints."""

from __future__ import annotations

from dataclasses import dataclass, field

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.pareto import dominates, feasible_front, pareto_front
from archetype.result import TrialState


def test_dominance_respects_directions():
    a = {"accuracy": 0.9, "latency_ms": 1.0}
    assert dominates(a, {"accuracy": 0.8, "latency_ms": 1.0}, DEFAULT_OBJECTIVES)
    assert dominates(a, {"accuracy": 0.9, "latency_ms": 2.0}, DEFAULT_OBJECTIVES)
    assert not dominates(a, a, DEFAULT_OBJECTIVES)
    assert not dominates(a, {"accuracy": 0.95, "latency_ms": 3.0}, DEFAULT_OBJECTIVES)


def test_front_against_brute_force():
    import random

    rng = random.Random(0)
    points = [{"accuracy": rng.random(), "latency_ms": rng.random()} for _ in range(200)]
    front = set(pareto_front(points, DEFAULT_OBJECTIVES))
    for i, p in enumerate(points):
        dominated = any(
            q["accuracy"] >= p["accuracy"] and q["latency_ms"] <= p["latency_ms"] and q != p for q in points
        )
        assert (i in front) == (not dominated)


def test_front_with_ties_and_three_objectives_against_brute_force():
    import random

    from archetype.objectives import Direction, Objective

    rng = random.Random(1)
    objectives = [*DEFAULT_OBJECTIVES, Objective("size_mb", Direction.MINIMIZE)]
    points = [{o.name: float(rng.randint(0, 4)) for o in objectives} for _ in range(300)]
    points += [{"accuracy": 1.0}]  # missing objectives: never on the front
    expected = [
        i for i, p in enumerate(points)
        if all(o.name in p for o in objectives)
        and not any(dominates(q, p, objectives) for q in points if all(o.name in q for o in objectives))
    ]
    assert pareto_front(points, objectives) == expected


@dataclass
class _Trial:
    state: TrialState
    values: dict = field(default_factory=dict)


def test_feasible_front_drops_infeasible_and_unfinished():
    trials = [
        _Trial(TrialState.COMPLETE, {"accuracy": 0.99, "latency_ms": 5.0}),  # over budget
        _Trial(TrialState.COMPLETE, {"accuracy": 0.90, "latency_ms": 0.5}),
        _Trial(TrialState.COMPLETE, {"accuracy": 0.80, "latency_ms": 0.4}),
        _Trial(TrialState.COMPLETE, {"accuracy": 0.70, "latency_ms": 0.45}),  # dominated
        _Trial(TrialState.PRUNED, {"latency_ms": 0.1}),
        _Trial(TrialState.FAILED),
    ]
    front = feasible_front(trials, DEFAULT_OBJECTIVES, [Constraint.parse("latency_ms<=1")])
    assert [t.values["accuracy"] for t in front] == [0.90, 0.80]
