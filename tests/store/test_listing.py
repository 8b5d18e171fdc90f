"""Listing a study's trials: pages of Store.trials, and architectures read as outlines rather than decoded."""

from __future__ import annotations

import json

import pytest

from archetype.result import Result, TrialState
from archetype.store import Store


def _row(trial: object) -> tuple[object, ...]:
    return (trial.number, trial.state, trial.values, trial.timings, trial.error, trial.arch_key)


@pytest.mark.parametrize("states", [None, [TrialState.COMPLETE], [TrialState.FAILED, TrialState.PRUNED]])
@pytest.mark.parametrize("offset, limit", [(0, 5), (7, 10), (30, 100), (0, None), (12, None), (100, 3)])
def test_a_page_of_trials_is_the_slice_of_all_of_them(listed_study, states, offset, limit) -> None:
    url, study = listed_study
    with Store.open(url) as store:
        everything = store.trials(study, states)
        page = store.trials(study, states, offset=offset, limit=limit)
    end = None if limit is None else offset + limit
    assert [_row(t) for t in page] == [_row(t) for t in everything[offset:end]]
    assert all(t.state in (states or list(TrialState)) for t in page)


@pytest.mark.parametrize("offset, limit", [(-1, None), (0, 0), (True, 5), (0, 2.5)])
def test_a_bad_page_is_refused(listed_study, offset, limit) -> None:
    url, study = listed_study
    with Store.open(url) as store, pytest.raises(ValueError, match=r"^(offset|limit) must be"):
        store.trials(study, offset=offset, limit=limit)


def test_listing_reads_operators_without_decoding_an_architecture(listed_study, decodes) -> None:
    url, study = listed_study
    with Store.open(url) as store:
        listed = store.trials(study)
        outcomes = store.trial_outcomes(study)
    outlines = [(list(t.operators), t.outline.macro) for t in [*listed, *outcomes]]
    assert decodes.decoded == 0
    stored = [json.loads(t.arch_json) for t in [*listed, *outcomes]]
    assert outlines == [([s["op"] for s in arch["slots"]], arch.get("macro", {})) for arch in stored]
    assert len({tuple(ops) for ops, _ in outlines}) > 5  # sampled architectures, not one repeated
    assert listed[0].arch == stored[0] and decodes.decoded == 1


def test_the_trial_state_index_serves_counts_by_state(listed_study) -> None:
    url, study = listed_study
    with Store.open(url) as store:
        counts = store.list_studies()[0].counts
        assert counts == {state.value: len(store.trials(study, [state]))
                          for state in TrialState if store.trials(study, [state])}
    import sqlite3

    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        plan = " ".join(str(row) for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT study_id, state, count(*) FROM trials GROUP BY study_id, state"))
    assert "COVERING INDEX ix_trials_study_id_state" in plan


def test_a_page_reads_back_with_its_values_on_every_backend(store: Store, study: str) -> None:
    results = [Result(TrialState.COMPLETE, {"accuracy": i / 10, "latency_ms": float(i)}) for i in range(9)]
    arch = {"input": "Image[1,8,8]", "slots": [{"slot": "stem", "op": "conv_bn_act", "params": {"width": 8}}]}
    store.record_trials(study, [(arch, f"{i:016d}", result) for i, result in enumerate(results)])
    page = store.trials(study, offset=3, limit=4)
    assert [(t.number, t.values) for t in page] == [(i + 1, results[i].values) for i in range(3, 7)]
    assert [t.operators for t in page] == [("conv_bn_act",)] * 4
