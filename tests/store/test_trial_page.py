"""Paged, sorted and filtered trial queries in SQL: the same trials as filtering the full list in Python."""

from __future__ import annotations

import pytest

from archetype.pareto import feasible_front
from archetype.result import Result, TrialState
from archetype.store import Store

OUTCOMES = [  # (state, accuracy, latency_ms)
    (TrialState.COMPLETE, 0.90, 1.5),
    (TrialState.COMPLETE, 0.95, 2.5),  # over the latency budget of 2 ms
    (TrialState.FAILED, None, None),
    (TrialState.COMPLETE, 0.80, 0.5),
    (TrialState.PRUNED, None, 3.0),
    (TrialState.COMPLETE, 0.85, 2.0),  # exactly on the budget: within
    (TrialState.COMPLETE, float("nan"), 1.0),  # a non-finite accuracy is stored as missing
]


@pytest.fixture
def filled(store: Store, study: str) -> str:
    for i, (state, accuracy, latency) in enumerate(OUTCOMES):
        values = {k: v for k, v in (("accuracy", accuracy), ("latency_ms", latency)) if v is not None}
        error = "out of memory" if state is TrialState.FAILED else None
        store.record_trial(study, {"slots": [{"slot": "s", "op": f"op{i}"}]}, f"{i:016d}", Result(state, values, error))
    return study


def numbers(page) -> list[int]:
    return [t.number for t in page.trials]


def test_pages_cover_every_trial_once_in_order(store: Store, filled: str) -> None:
    first = store.trial_page(filled, limit=3)
    second = store.trial_page(filled, offset=3, limit=3)
    third = store.trial_page(filled, offset=6, limit=3)
    assert (first.total, second.total, third.total) == (7, 7, 7)
    assert numbers(first) + numbers(second) + numbers(third) == [1, 2, 3, 4, 5, 6, 7]
    assert store.trial_page(filled, sort="number", descending=True, limit=2).trials[0].number == 7
    assert first.trials[0].values == {"accuracy": 0.90, "latency_ms": 1.5}


def test_sorting_by_a_metric_puts_trials_without_it_last(store: Store, filled: str) -> None:
    ascending = store.trial_page(filled, sort="accuracy")
    assert numbers(ascending) == [4, 6, 1, 2, 3, 5, 7]  # 0.80, 0.85, 0.90, 0.95, then none by number
    descending = store.trial_page(filled, sort="accuracy", descending=True)
    assert numbers(descending)[:4] == [2, 1, 6, 4]
    assert numbers(store.trial_page(filled, sort="latency_ms"))[:3] == [4, 7, 1]
    assert numbers(store.trial_page(filled, sort="state"))[:5] == [1, 2, 4, 6, 7]  # complete first


def test_budget_and_state_filters_agree_with_the_python_feasibility(store: Store, filled: str) -> None:
    record = store.get_study(filled)
    every = store.trials(filled)
    feasible = {t.number for t in every if t.state is TrialState.COMPLETE
                and all(c.satisfied(t.values) for c in record.constraints)}
    within = store.trial_page(filled, within_budget=True)
    over = store.trial_page(filled, within_budget=False)
    assert set(numbers(within)) == feasible == {1, 4, 6, 7}
    assert set(numbers(over)) == {2, 3, 5} and within.total + over.total == len(every)
    failed = store.trial_page(filled, states=[TrialState.FAILED])
    assert numbers(failed) == [3] and failed.trials[0].error == "out of memory"
    assert numbers(store.trial_page(filled, states=[TrialState.COMPLETE], within_budget=False)) == [2]
    front = {t.number for t in feasible_front(every, record.objectives, record.constraints)}
    assert front <= set(numbers(within))


@pytest.mark.parametrize("sort", ["1 OR 1=1", "number; DROP TABLE trials", "accuracy desc", "'", ""])
def test_a_sort_key_that_is_neither_column_nor_metric_name_is_refused(store: Store, filled: str, sort: str) -> None:
    with pytest.raises(ValueError, match="sort"):
        store.trial_page(filled, sort=sort)
    assert len(store.trials(filled)) == len(OUTCOMES)


def test_an_injected_metric_name_is_only_a_bound_value(store: Store, filled: str) -> None:
    page = store.trial_page(filled, sort="accuracy__OR_1")  # a legal name that no trial has: sorts by number
    assert numbers(page) == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(("offset", "limit"), [(-1, 10), (0, 0), (0, 1001), (True, 5)])
def test_bad_offsets_and_limits_are_refused(store: Store, filled: str, offset: int, limit: int) -> None:
    with pytest.raises(ValueError, match=r"offset|limit"):
        store.trial_page(filled, offset=offset, limit=limit)


def test_outcomes_are_the_trials_numbers_states_architectures_and_values(store: Store, filled: str) -> None:
    expected = [(t.number, t.state, t.arch, t.values) for t in store.trials(filled)]
    assert [(o.number, o.state, o.arch, o.values) for o in store.trial_outcomes(filled)] == expected


def test_a_missing_study_is_a_clean_error(store: Store) -> None:
    from archetype.errors import StorageError

    with pytest.raises(StorageError, match="no study named 'nope'"):
        store.trial_page("nope")
