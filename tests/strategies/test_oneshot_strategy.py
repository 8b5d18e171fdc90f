"""The oneshot strategy: the aging evolution on supernet scores, never breeding from an infeasible candidate."""

from __future__ import annotations

import json

import numpy as np

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.searchspace import Image, get_space
from archetype.strategies import make_strategy
from archetype.strategies.base import StoredTrial


def test_mutates_the_best_feasible_candidate_once_the_population_is_full() -> None:
    space = get_space("conv-small", Image(1, 8, 8), 10)
    strategy = make_strategy("oneshot", space, DEFAULT_OBJECTIVES, (Constraint.parse("latency_ms<=1"),), seed=0,
                             population=4, sample=4)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(4)]
    scores = [(0.5, 0.5), (0.9, 0.5), (0.99, 5.0), (0.1, 0.2)]  # (supernet accuracy, latency): the 0.99 is too slow
    stored = []
    for number, (arch, (accuracy, latency)) in enumerate(zip(archs, scores), start=1):
        result = Result(TrialState.COMPLETE, {"supernet_accuracy": accuracy, "latency_ms": latency})
        strategy.tell(arch, result)
        stored.append(StoredTrial(number, arch, result))
    parent_neighbours = {n.key for n in space.neighbours(archs[1])}
    for number in range(5, 8):
        asked = strategy.ask()
        assert asked.key in parent_neighbours
        stored.append(StoredTrial(number, asked, None))
    state = json.loads(json.dumps(strategy.state_dict()))
    resumed = make_strategy("oneshot", space, DEFAULT_OBJECTIVES, (Constraint.parse("latency_ms<=1"),), seed=9,
                            population=4, sample=4)
    resumed.restore(state, stored)
    assert [strategy.ask().key for _ in range(3)] == [resumed.ask().key for _ in range(3)]


def test_failed_or_unscored_candidates_never_become_parents() -> None:
    space = get_space("conv-small", Image(1, 8, 8), 10)
    strategy = make_strategy("oneshot", space, DEFAULT_OBJECTIVES, seed=0, population=3, sample=3)
    assert strategy.scoring == "supernet"
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(3)]
    strategy.tell(archs[0], Result(TrialState.FAILED, error="boom"))
    strategy.tell(archs[1], Result(TrialState.COMPLETE, {"latency_ms": 1.0}))
    strategy.tell(archs[2], Result(TrialState.COMPLETE, {"accuracy": 0.7}))
    parent_neighbours = {n.key for n in space.neighbours(archs[2])}
    assert all(strategy.ask().key in parent_neighbours for _ in range(3))
