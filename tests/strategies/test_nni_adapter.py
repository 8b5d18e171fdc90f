"""NNI's strategies behind ask/tell: clear error without nni, real searches on the tabular benchmark with it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.strategies import make_strategy
from archetype.worker.tabular import TabularBenchmark


@pytest.fixture(scope="module")
def table():
    return TabularBenchmark.load()


@pytest.fixture(scope="module")
def budget(table):
    """A latency bound met by 30% of the table."""
    latencies = [v["latency_ms"] for v in table.values.values()]
    return Constraint("latency_ms", "<=", float(np.quantile(latencies, 0.3)))


def test_without_nni_the_error_names_the_extra(table, monkeypatch):
    monkeypatch.setitem(sys.modules, "nni", None)  # as if it were not installed
    with pytest.raises(SpecError, match=r"the nni-\* strategies need nni 3.0: pip install 'archetype-nas\[nni\]'"):
        make_strategy("nni-evolution", table.space, DEFAULT_OBJECTIVES)


@pytest.mark.nni
def test_reward_puts_every_feasible_result_above_every_infeasible_one(table, budget):
    strategy = make_strategy("nni-tpe", table.space, DEFAULT_OBJECTIVES, (budget,))
    rows = list(table.values.values())
    feasible = [strategy.reward(Result(TrialState.COMPLETE, r)) for r in rows if budget.satisfied(r)]
    infeasible = [strategy.reward(Result(TrialState.COMPLETE, r)) for r in rows if not budget.satisfied(r)]
    assert min(feasible) > max(infeasible)
    assert max(feasible) == max(r["accuracy"] for r in rows if budget.satisfied(r))
    assert strategy.reward(Result.failed("out of memory")) == strategy.invalid_reward
    unmeasured = {k: v for k, v in rows[0].items() if k != budget.name}  # a missing constrained value
    assert strategy.reward(Result(TrialState.COMPLETE, unmeasured)) == strategy.invalid_reward


@pytest.mark.nni
def test_evolution_improves_on_its_random_population(table, budget):
    """Past the random first population, the mutated children are told higher rewards on average."""
    gains = []
    for seed in range(3):
        strategy = make_strategy("nni-evolution", table.space, DEFAULT_OBJECTIVES, (budget,), seed=seed,
                                 population=15, sample_size=4)
        rewards = []
        for _ in range(45):
            arch = strategy.ask()
            result = table.lookup(arch)
            strategy.tell(arch, result)
            rewards.append(strategy.reward(result))
        strategy.close()
        gains.append(np.mean(rewards[-15:]) - np.mean(rewards[:15]))
    assert np.median(gains) > 0


@pytest.mark.nni
@pytest.mark.parametrize("name", ["nni-evolution", "nni-rl"])
def test_an_ask_while_nni_waits_is_a_random_unseen_architecture(name, table):
    strategy = make_strategy(name, table.space, DEFAULT_OBJECTIVES, seed=0)
    first, second = strategy.ask(), strategy.ask()  # NNI's engine waits on the first
    assert first.key != second.key
    strategy.tell(second, table.lookup(second))
    strategy.tell(first, table.lookup(first))
    third = strategy.ask()
    assert third.key not in {first.key, second.key}
    strategy.close()
    assert not strategy._thread.is_alive()


@pytest.mark.nni
@pytest.mark.parametrize("name", ["nni-evolution", "nni-tpe", "nni-rl"])
def test_a_resumed_search_replays_without_asking_again(name, table, budget):
    """Everything told before a save is answered from the state: what is asked after it is new."""
    first = make_strategy(name, table.space, DEFAULT_OBJECTIVES, (budget,), seed=4)
    asked = []
    for _ in range(12):
        arch = first.ask()
        first.tell(arch, table.lookup(arch))
        asked.append(arch.key)
    first.close()
    resumed = make_strategy(name, table.space, DEFAULT_OBJECTIVES, (budget,))
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for _ in range(3):
        arch = resumed.ask()
        assert arch.key not in asked
        resumed.tell(arch, table.lookup(arch))
        asked.append(arch.key)
    resumed.close()
