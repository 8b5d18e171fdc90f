"""Strategy options are checked by name; on the tabular benchmark the strategies honour a constraint."""

from __future__ import annotations

import numpy as np
import pytest

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.searchspace import Image, get_space
from archetype.strategies import list_strategies, make_strategy
from archetype.strategies.base import strategy_options
from archetype.worker.tabular import TabularBenchmark, enumerate_space, tabular_space


@pytest.fixture(scope="module")
def space():
    return get_space("conv-small", Image(1, 8, 8), 10)


@pytest.fixture(scope="module")
def table():
    return TabularBenchmark.load()


def _wrong_value(default):
    return "many" if isinstance(default, int | float) else 3


@pytest.mark.parametrize(
    ("name", "option"), [(n, o) for n in list_strategies() for o in strategy_options(n)]
)
def test_option_of_the_wrong_type_is_named(name, option, space):
    wrong = _wrong_value(strategy_options(name)[option])
    with pytest.raises(SpecError, match=rf"strategy '{name}': option '{option}' must be"):
        make_strategy(name, space, DEFAULT_OBJECTIVES, **{option: wrong})


@pytest.mark.parametrize("name", list_strategies())
def test_unknown_option_is_named_with_the_known_ones(name, space):
    with pytest.raises(SpecError, match=rf"strategy '{name}': unknown option 'bogus'; options: "):
        make_strategy(name, space, DEFAULT_OBJECTIVES, bogus=1)


def test_non_positive_sizes_are_refused(space):
    with pytest.raises(SpecError, match="option 'population' must be an integer >= 2, got 0"):
        make_strategy("evolution", space, DEFAULT_OBJECTIVES, population=0)
    with pytest.raises(SpecError, match=r"option 'sample' \(5\) must not exceed 'population' \(4\)"):
        make_strategy("evolution", space, DEFAULT_OBJECTIVES, population=4, sample=5)
    with pytest.raises(SpecError, match="option 'predictor' must be one of ridge, svr, tree, got 'forest'"):
        make_strategy("simq", space, DEFAULT_OBJECTIVES, predictor="forest")


def test_table_covers_the_whole_space(table):
    keys = {a.key for a in enumerate_space(tabular_space())}
    assert keys == set(table.values)
    assert all(0.0 <= v["accuracy"] <= 1.0 and v["latency_ms"] > 0 for v in table.values.values())


GUIDED = {
    "evolution": {"population": 10, "sample": 3},
    "tpe": {"startup": 10},
    "nsga2": {"population": 10},
    "nsga3": {"population": 10},
    "simq": {"initial": 10, "batch": 5, "predicted": 500, "nsga_population": 30},
    "nni-evolution": {"population": 10, "sample_size": 3},
    "nni-tpe": {},
}


@pytest.mark.parametrize("name", sorted(GUIDED))
def test_guided_strategies_favour_the_feasible_region(name, table):
    """Under a bound on params met by a quarter of the space, the last 15 of 30 evaluations hold
    more feasible architectures than a uniform draw would."""
    bound = float(np.quantile([v["params"] for v in table.values.values()], 0.25))
    constraint = Constraint("params", "<=", bound)
    strategy = make_strategy(name, table.space, DEFAULT_OBJECTIVES, (constraint,), seed=0, **GUIDED[name])
    feasible = []
    for _ in range(30):
        arch = strategy.ask()
        result = table.lookup(arch)
        feasible.append(constraint.satisfied(result.values))
        strategy.tell(arch, result)
    assert sum(feasible[15:]) / 15 > 0.35, feasible
