"""Non-dominated ranks, crowding, hypervolume and knee against brute force and hand-made fronts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint, Direction, Objective, within_budget
from archetype.pareto import (
    crowding_distances,
    dominates,
    hypervolume,
    hypervolume_reference,
    is_feasible,
    knee_point,
    nondominated_ranks,
    summarise_front,
)
from archetype.result import TrialState

THREE = (*DEFAULT_OBJECTIVES, Objective("params", Direction.MINIMIZE))


def _points(n: int, objectives, seed: int, grid: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, grid, size=(n, len(objectives))) if grid else rng.random((n, len(objectives)))
    return [{o.name: float(v) for o, v in zip(objectives, row)} for row in values]


def test_ranks_peel_fronts_like_brute_force():
    points = _points(60, THREE, seed=1)
    ranks = nondominated_ranks(points, THREE)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i], THREE) for j in remaining)}
        assert {i for i in remaining if ranks[i] == rank} == front
        remaining -= front
        rank += 1


@pytest.mark.parametrize("objectives", [DEFAULT_OBJECTIVES, THREE], ids=["2d", "3d"])
def test_hypervolume_equals_a_grid_count(objectives):
    """Integer points in a 0..8 grid: the dominated volume is the number of dominated unit cells."""
    points = _points(12, objectives, seed=len(objectives), grid=8)
    reference = {o.name: (-1.0 if o.direction is Direction.MAXIMIZE else 8.0) for o in objectives}
    def minimised(p):
        return [-p[o.name] if o.direction is Direction.MAXIMIZE else p[o.name] for o in objectives]

    costs = [minimised(p) for p in points]
    ref = minimised(reference)
    cells = 0
    for corner in itertools.product(range(-9, 9), repeat=len(objectives)):
        # the unit cell [corner, corner + 1] in minimised coordinates, counted once if any point dominates it
        if any(all(c <= x and x + 1 <= r for c, x, r in zip(cost, corner, ref)) for cost in costs):
            cells += 1
    assert hypervolume(points, objectives, reference) == pytest.approx(cells)


def test_hypervolume_ignores_points_beyond_the_reference():
    points = [{"accuracy": 0.9, "latency_ms": 1.0}, {"accuracy": 0.95, "latency_ms": 5.0}]
    reference = {"accuracy": 0.5, "latency_ms": 2.0}
    assert hypervolume(points, DEFAULT_OBJECTIVES, reference) == pytest.approx(0.4 * 1.0)
    assert hypervolume([], DEFAULT_OBJECTIVES, reference) == 0.0


def test_knee_is_the_bend_of_an_l_shaped_front():
    front = [{"accuracy": a, "latency_ms": t} for a, t in [(0.5, 1.0), (0.93, 1.2), (0.95, 3.0), (0.96, 9.0)]]
    assert knee_point(front, DEFAULT_OBJECTIVES) == 1
    assert knee_point([], DEFAULT_OBJECTIVES) is None


def test_crowding_marks_the_extremes_infinite():
    costs = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    distance = crowding_distances(costs)
    assert np.isinf(distance[[0, 3]]).all()
    assert distance[1] == pytest.approx(distance[2]) == pytest.approx(2 / 3 + 2 / 3)


@dataclass
class _Trial:
    number: int
    state: TrialState
    values: dict = field(default_factory=dict)


def test_summary_keeps_feasible_front_knee_and_reference():
    trials = [
        _Trial(0, TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.5}),
        _Trial(1, TrialState.COMPLETE, {"accuracy": 0.9, "latency_ms": 0.6}),
        _Trial(2, TrialState.COMPLETE, {"accuracy": 0.97, "latency_ms": 3.0}),  # breaks the budget
        _Trial(3, TrialState.COMPLETE, {"accuracy": 0.92, "latency_ms": 1.5}),
        _Trial(4, TrialState.FAILED, {}),
        _Trial(5, TrialState.COMPLETE, {"accuracy": 0.8, "latency_ms": 1.0}),  # dominated by 1
    ]
    summary = summarise_front(trials, DEFAULT_OBJECTIVES, (Constraint.parse("latency_ms<=2"),))
    assert [t.number for t in summary.front] == [0, 1, 3]
    assert summary.knee.number == 1
    assert summary.reference == {"accuracy": 0.5, "latency_ms": 2.0}  # the latency budget bounds the volume
    assert summary.ranks[5] == 1 and 2 not in summary.ranks
    expected = (0.9 - 0.5) * (2.0 - 0.6) + (0.92 - 0.9) * (2.0 - 1.5)
    assert summary.hypervolume == pytest.approx(expected)


def test_reference_is_the_constraint_bound_else_the_worst_complete_value():
    trials = [
        _Trial(0, TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.5}),
        _Trial(1, TrialState.COMPLETE, {"accuracy": 0.9, "latency_ms": 3.0}),
        _Trial(2, TrialState.PRUNED, {"accuracy": 0.1, "latency_ms": 9.0}),  # not complete: not counted
    ]
    assert hypervolume_reference(trials, DEFAULT_OBJECTIVES) == {"accuracy": 0.5, "latency_ms": 3.0}
    bounded = (Constraint.parse("latency_ms<=2"), Constraint.parse("accuracy>=0.3"), Constraint.parse("latency_ms<=4"))
    assert hypervolume_reference(trials, DEFAULT_OBJECTIVES, bounded) == {"accuracy": 0.3, "latency_ms": 2.0}
    assert hypervolume_reference([], DEFAULT_OBJECTIVES) == {}


@pytest.mark.parametrize("values", [{"accuracy": 0.9}, {"accuracy": 0.9, "latency_ms": float("nan")}])
def test_a_missing_or_non_finite_constrained_value_is_infeasible(values):
    budget = (Constraint.parse("latency_ms<=2"),)
    assert not within_budget(values, budget)
    assert not is_feasible(_Trial(0, TrialState.COMPLETE, values), budget)
    assert is_feasible(_Trial(0, TrialState.COMPLETE, {**values, "latency_ms": 1.0}), budget)
    assert not is_feasible(_Trial(0, TrialState.PRUNED, {**values, "latency_ms": 1.0}), budget)
