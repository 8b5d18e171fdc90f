"""On NAS-Bench-201's published table, evolution finds the CIFAR-10 optimum and learns a device's latency budget."""

from __future__ import annotations

import numpy as np
import pytest

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint, Direction, Objective
from archetype.result import Result, TrialState
from archetype.searchspace import Image
from archetype.searchspace.spaces.nb201 import nb201_space
from archetype.strategies import make_strategy
from archetype.worker.evaluator import Budget
from archetype.worker.published_table import shared_benchmarks_dir
from archetype.worker.tabular import PublishedTableEvaluator

OPTIMUM = 0.9437  # the best CIFAR-10 test accuracy of the 15,625 cells


@pytest.fixture(scope="module")
def space():
    return nb201_space(Image(3, 32, 32), 10)


def _evaluator(space, device):
    root = shared_benchmarks_dir()
    if root is None or not (root / "nb201.csv.gz").exists():
        pytest.skip("../shared/benchmarks is not beside this checkout")
    return PublishedTableEvaluator.open(root / "nb201.csv.gz", space, "cifar10_test", device)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evolution_finds_the_cifar10_optimum_within_150_evaluations(space, seed):
    evaluator = _evaluator(space, None)
    strategy = make_strategy("evolution", space, (Objective("accuracy", Direction.MAXIMIZE),), seed=seed)
    best = 0.0
    for _ in range(150):
        arch = strategy.ask()
        result = evaluator.evaluate(arch, Budget(epochs=0))
        strategy.tell(arch, result)
        best = max(best, result.values["accuracy"])
    assert best == pytest.approx(OPTIMUM, abs=1e-4)


def test_evolution_learns_a_phone_latency_budget_from_pruned_cells(space):
    """pixel2 at the budget 10% of the cells meet: after 20 proposals at least 80% are within it."""
    evaluator = _evaluator(space, "pixel2")
    constraint = Constraint("latency_ms", "<=", float(np.quantile(evaluator.latency, 0.1)))
    strategy = make_strategy("evolution", space, DEFAULT_OBJECTIVES, (constraint,), seed=0)
    within = []
    for _ in range(80):
        arch = strategy.ask()
        result = evaluator.evaluate(arch, Budget(epochs=0))
        if not constraint.satisfied(result.values):  # as the training evaluator stores it: pruned, never trained
            result = Result(TrialState.PRUNED, {"latency_ms": result.values["latency_ms"]})
        within.append(result.state is TrialState.COMPLETE)
        strategy.tell(arch, result)
    assert np.mean(within[20:]) >= 0.8, within
