"""Strategies learn a latency bound from every measured candidate, trained or pruned, and from a given predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.searchspace import Image, get_space
from archetype.strategies import StoredTrial, make_strategy
from archetype.strategies.constraint_model import ConstraintModel, constrained_value
from archetype.worker.tabular import enumerate_space, tabular_space


@pytest.fixture(scope="module")
def space():
    return tabular_space()


@pytest.fixture(scope="module")
def archs(space):
    return list(enumerate_space(space))


@pytest.fixture(scope="module")
def large():
    """conv-small (millions of architectures, so a strategy cannot run out of feasible ones) and 400 draws of it."""
    space = get_space("conv-small", Image(1, 8, 8), 10)
    rng = np.random.default_rng(0)
    return space, [space.sample(rng) for _ in range(400)]


def latency_of(arch) -> float:
    """A latency that follows the architecture (its MACs and parameters), as a device's does."""
    return 0.05 + arch.macs() / 2e6 + arch.params() / 1e6


def accuracy_of(arch) -> float:
    return 0.5 + 0.4 * np.tanh(arch.params() / 2e4)


def evaluate(arch, constraint: Constraint) -> Result:
    """What the training evaluator does: over the latency budget, pruned with its latency and never trained."""
    values = {"latency_ms": latency_of(arch), "params": float(arch.params())}
    if not constraint.satisfied(values):
        return Result(TrialState.PRUNED, values, error="over budget: not trained")
    return Result(TrialState.COMPLETE, {**values, "accuracy": accuracy_of(arch)})


def bound_at(archs, share: float) -> Constraint:
    return Constraint("latency_ms", "<=", float(np.quantile([latency_of(a) for a in archs], share)))


def test_learns_the_bound_from_pruned_results_alone(space, archs):
    constraint = bound_at(archs, 0.3)
    model = ConstraintModel(space, (constraint,))
    rng = np.random.default_rng(0)
    for i in rng.choice(len(archs), 30, replace=False):
        model.observe(archs[i], Result(TrialState.PRUNED, {"latency_ms": latency_of(archs[i])}))
    predicted = model.violations(archs) <= 0
    truth = np.array([constraint.satisfied({"latency_ms": latency_of(a)}) for a in archs])
    assert (predicted & truth).sum() / predicted.sum() >= 0.8, "most architectures predicted feasible are"
    assert (predicted == truth).mean() >= 0.8


def test_a_screened_candidate_teaches_by_its_predicted_latency(space, archs):
    values = {"predicted_latency_ms": 3.0, "params": 10.0}
    assert constrained_value(values, "latency_ms") == 3.0
    assert constrained_value({"latency_ms": 2.0, **values}, "latency_ms") == 2.0
    assert constrained_value(values, "size_mb") is None
    model = ConstraintModel(space, (Constraint.parse("latency_ms<=1"),))
    model.observe(archs[0], Result(TrialState.PRUNED, values))
    assert model.state_dict() == [{"arch": archs[0].to_json(), "values": {"latency_ms": 3.0}}]


def test_nothing_is_judged_before_enough_is_measured(space, archs):
    model = ConstraintModel(space, (Constraint.parse("latency_ms<=0.0001"),))
    model.observe(archs[0], Result(TrialState.PRUNED, {"latency_ms": 5.0}))
    assert np.all(model.violations(archs[:10]) == 0.0)
    model.use_predictor("latency_ms", lambda a: 1.0)  # a latency table's predictor answers at once
    assert np.allclose(model.violations(archs[:10]), (1.0 - 0.0001) / 0.0001)


LEARNERS = {
    "evolution": {"population": 20, "sample": 5},
    "simq": {"initial": 20, "batch": 5, "predicted": 400, "nsga_population": 30},
    "tpe": {"startup": 10},
    "nsga2": {"population": 10},
}


@pytest.mark.parametrize("share", [0.1, 0.3])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_proposals_after_the_initial_phase_meet_the_bound(name, share, large):
    """Candidates 21-40 are at least 80% within the budget though over-budget ones were never trained."""
    space, drawn = large
    constraint = bound_at(drawn, share)
    strategy = make_strategy(name, space, DEFAULT_OBJECTIVES, (constraint,), seed=1, **LEARNERS[name])
    within = []
    for _ in range(40):
        arch = strategy.ask()
        result = evaluate(arch, constraint)
        within.append(result.state is TrialState.COMPLETE)
        strategy.tell(arch, result)
    assert sum(within[20:]) >= 16, within


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_a_given_latency_predictor_steers_proposals_from_the_start(name, large):
    space, drawn = large
    constraint = bound_at(drawn, 0.1)
    strategy = make_strategy(name, space, DEFAULT_OBJECTIVES, (constraint,), seed=2, **LEARNERS[name])
    strategy.use_predictor("latency_ms", latency_of)
    within = []
    for _ in range(30):
        arch = strategy.ask()
        result = evaluate(arch, constraint)
        within.append(result.state is TrialState.COMPLETE)
        strategy.tell(arch, result)
    assert sum(within[20:]) >= 9, within


NSGA_RESUME = ("Optuna's NSGA-II stamps a generation on every draw, set-aside ones included, which a study rebuilt "
               "from the stored trials lacks: a resumed constrained NSGA-II search may depart at a generation boundary")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.skip(reason=NSGA_RESUME)) if n == "nsga2" else n
                                  for n in sorted(LEARNERS)])
def test_resumes_with_what_it_learned_of_the_bound(name, archs, space):
    constraint = bound_at(archs, 0.3)
    first = make_strategy(name, space, DEFAULT_OBJECTIVES, (constraint,), seed=5, **LEARNERS[name])
    stored = []
    for number in range(1, 25):
        arch = first.ask()
        result = evaluate(arch, constraint)
        first.tell(arch, result)
        stored.append(StoredTrial(number, arch, result))
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make_strategy(name, space, DEFAULT_OBJECTIVES, (constraint,), seed=99, **LEARNERS[name])
    resumed.restore(state, stored)
    assert [first.ask().key for _ in range(4)] == [resumed.ask().key for _ in range(4)]
