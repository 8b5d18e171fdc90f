"""The Store API on SQLite and PostgreSQL: studies, numbered trials, results and metrics, one-line errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from archetype.errors import StorageError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.store import Store, StudyStatus, StudySummary
from archetype.store import storage as storage_module

ARCH = {"input": "Image[1,8,8]", "slots": [{"op": "conv", "kernel": 3}]}
KEY = "0123456789abcdef"


def _complete(**values: float) -> Result:
    return Result(
        TrialState.COMPLETE,
        values=values,
        timings={"train": 1.5, "measure": 0.25},
        target="cpu-ort",
        fingerprint={"cpu": "x86_64", "onnxruntime": "1.19"},
    )


def _new_study(store: Store, name: str) -> None:
    store.create_study(name, space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES, constraints=(),
                       spec={})


def _one_line_error(excinfo: pytest.ExceptionInfo[StorageError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_a_study_reads_back_as_created(store: Store, study: str) -> None:
    record = store.get_study(study)
    assert (record.name, record.space, record.target, record.status) == (study, "conv-small", "cpu-ort", "running")
    assert record.status is StudyStatus.RUNNING
    assert record.objectives == DEFAULT_OBJECTIVES
    assert record.constraints == (Constraint("latency_ms", "<=", 2.0),)
    assert record.spec == {"space": "conv-small", "trials": 8}
    assert record.created_at.tzinfo is UTC and record.created_at == record.updated_at


def test_a_taken_study_name_is_refused_and_the_first_study_kept(store: Store, study: str) -> None:
    with pytest.raises(StorageError) as caught:
        _new_study(store, study)
    assert _one_line_error(caught) == f"study '{study}' already exists in {store.url}; pick another name"
    assert [s.name for s in store.list_studies()] == [study]
    assert store.get_study(study).space == "conv-small"


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.get_study("nope"),
        lambda store: store.trials("nope"),
        lambda store: store.start_trial("nope", ARCH, KEY),
        lambda store: store.set_study_status("nope", "complete"),
        lambda store: store.record_trial("nope", ARCH, KEY, _complete(accuracy=0.5)),
    ],
)
def test_a_missing_study_is_named_in_the_error(store: Store, call: Callable[[Store], object]) -> None:
    with pytest.raises(StorageError) as caught:
        call(store)
    assert _one_line_error(caught) == f"no study named 'nope' in {store.url}"


def test_studies_are_listed_newest_first_with_trial_counts(store: Store, study: str) -> None:
    _new_study(store, "later")
    store.record_trial(study, ARCH, KEY, _complete(accuracy=0.5))
    store.record_trial(study, ARCH, KEY, Result.failed("out of memory"))
    store.record_trial(study, ARCH, KEY, _complete(accuracy=0.6))
    store.start_trial(study, ARCH, KEY)
    summaries = store.list_studies()
    assert [s.name for s in summaries] == ["later", study]
    assert all(isinstance(s, StudySummary) for s in summaries)
    assert summaries[0].counts == {}
    assert summaries[1].counts == {"complete": 2, "failed": 1, "running": 1}
    assert summaries[1].total == 4
    assert summaries[1].objectives == DEFAULT_OBJECTIVES


def test_study_status_changes_and_bumps_updated_at(store: Store, study: str) -> None:
    before = store.get_study(study)
    store.set_study_status(study, StudyStatus.INTERRUPTED)
    after = store.get_study(study)
    assert after.status == "interrupted"
    assert after.updated_at > before.updated_at and after.created_at == before.created_at
    with pytest.raises(ValueError):
        store.set_study_status(study, "paused")


def test_next_study_name_takes_the_first_free_number(store: Store) -> None:
    assert store.next_study_name("conv_small") == "conv_small-1"
    for name in ("conv_small-1", "conv_small-3", "convXsmall-2", "conv_small-2x"):
        _new_study(store, name)
    assert store.next_study_name("conv_small") == "conv_small-2"
    assert store.next_study_name("convXsmall") == "convXsmall-1"


def test_trial_numbers_are_dense_and_per_study(store: Store, study: str) -> None:
    _new_study(store, "other")
    numbers = [
        store.start_trial(study, ARCH, KEY).number,
        store.record_trial(study, ARCH, KEY, _complete(accuracy=0.1)).number,
        store.record_trial("other", ARCH, KEY, _complete(accuracy=0.2)).number,
        store.start_trial(study, ARCH, KEY, attempt=2).number,
    ]
    assert numbers == [1, 2, 1, 3]
    assert [t.number for t in store.trials(study)] == [1, 2, 3]
    assert [t.attempt for t in store.trials(study)] == [1, 1, 2]


def test_concurrent_writers_get_unique_dense_numbers(url: str, study: str) -> None:
    with Store.open(url) as first, Store.open(url) as second:
        stores = [first, second] * 4
        with ThreadPoolExecutor(max_workers=len(stores)) as pool:
            started = list(pool.map(lambda s: [s.start_trial(study, ARCH, KEY).number for _ in range(10)], stores))
    numbers = sorted(n for batch in started for n in batch)
    assert numbers == list(range(1, 81))


def test_a_started_trial_is_running_until_finished(store: Store, study: str) -> None:
    started = store.start_trial(study, ARCH, KEY)
    assert started.state is TrialState.RUNNING
    assert (started.values, started.timings, started.fingerprint, started.finished_at) == ({}, {}, {}, None)
    assert started.arch == ARCH and started.arch_key == KEY and started.started_at.tzinfo is UTC

    finished = store.finish_trial(started.id, _complete(accuracy=0.91, latency_ms=1.25, params=12345))
    assert finished.state is TrialState.COMPLETE
    assert finished.values == {"accuracy": 0.91, "latency_ms": 1.25, "params": 12345.0}
    assert finished.timings == {"train": 1.5, "measure": 0.25}
    assert finished.target == "cpu-ort"
    assert finished.fingerprint == {"cpu": "x86_64", "onnxruntime": "1.19"}
    assert finished.finished_at is not None and finished.finished_at >= finished.started_at
    assert store.trial(study, started.number) == finished
    assert store.trials(study) == [finished]
    assert finished.result() == _complete(accuracy=0.91, latency_ms=1.25, params=12345)


def test_non_finite_values_are_stored_as_null_and_read_back_missing(
    store: Store, study: str, query: Callable[..., list[tuple[Any, ...]]]
) -> None:
    result = _complete(accuracy=0.5, latency_ms=math.nan, size_mb=math.inf)
    result.timings["measure"] = math.nan
    recorded = store.record_trial(study, {"width": math.inf}, KEY, result)
    assert recorded.values == {"accuracy": 0.5}
    assert store.trials(study)[0].values == {"accuracy": 0.5}
    assert store.trials(study)[0].timings == {"train": 1.5}
    assert store.trials(study)[0].arch == {"width": None}
    stored = dict(query("SELECT name, value FROM trial_metrics ORDER BY name"))
    assert stored == {"accuracy": 0.5, "latency_ms": None, "size_mb": None}


def test_a_failed_trial_keeps_its_error(store: Store, study: str) -> None:
    trial = store.record_trial(study, ARCH, KEY, Result.failed("CUDA out of memory", timings={"train": 3.0}))
    assert (trial.state, trial.error, trial.values, trial.timings) == (
        TrialState.FAILED, "CUDA out of memory", {}, {"train": 3.0}
    )
    assert store.trial(study, 1).result() == Result.failed("CUDA out of memory", timings={"train": 3.0})


def test_trials_can_be_filtered_by_state(store: Store, study: str) -> None:
    store.record_trial(study, ARCH, KEY, _complete(accuracy=0.1))
    store.record_trial(study, ARCH, KEY, Result(TrialState.PRUNED, {"accuracy": 0.05}))
    store.record_trial(study, ARCH, KEY, _complete(accuracy=0.3))
    store.start_trial(study, ARCH, KEY)
    assert [t.number for t in store.trials(study, [TrialState.COMPLETE])] == [1, 3]
    assert [t.values for t in store.trials(study, [TrialState.COMPLETE])] == [{"accuracy": 0.1}, {"accuracy": 0.3}]
    assert [t.number for t in store.trials(study, {TrialState.PRUNED, TrialState.RUNNING})] == [2, 4]
    assert store.trials(study, []) == []
    assert [t.number for t in store.trials(study)] == [1, 2, 3, 4]


def test_a_trial_finishes_once(store: Store, study: str) -> None:
    trial = store.start_trial(study, ARCH, KEY)
    first = store.finish_trial(trial.id, _complete(accuracy=0.7))
    with pytest.raises(StorageError) as caught:
        store.finish_trial(trial.id, _complete(accuracy=0.9))
    assert _one_line_error(caught) == f"trial 1 of study '{study}' in {store.url} already finished (complete)"
    assert store.trial(study, 1) == first


def test_unknown_trials_are_named_in_the_error(store: Store, study: str) -> None:
    with pytest.raises(StorageError, match=r"^no trial with id 99 in "):
        store.finish_trial(99, _complete(accuracy=0.7))
    with pytest.raises(StorageError, match=rf"^no trial number 7 in study '{study}' in "):
        store.trial(study, 7)


def test_a_trial_cannot_be_finished_as_running(store: Store, study: str) -> None:
    trial = store.start_trial(study, ARCH, KEY)
    with pytest.raises(ValueError, match="not running"):
        store.finish_trial(trial.id, Result(TrialState.RUNNING))
    assert store.trial(study, 1).state is TrialState.RUNNING


def test_a_failed_write_leaves_nothing_behind(store: Store, study: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_write(*args: object) -> None:
        raise OperationalError("INSERT INTO trial_metrics", {}, Exception("disk I/O error"))

    monkeypatch.setattr(storage_module, "_write_metrics", failing_write)
    with pytest.raises(StorageError) as caught:
        store.record_trial(study, ARCH, KEY, _complete(accuracy=0.5))
    assert _one_line_error(caught) == f"cannot record a trial of study '{study}' in {store.url}: disk I/O error"
    assert store.trials(study) == []
    assert store.list_studies()[0].counts == {}


def test_stored_trials_survive_reopening(url: str, study: str) -> None:
    with Store.open(url) as store:
        written = store.record_trial(study, ARCH, KEY, _complete(accuracy=0.5, latency_ms=1.0))
    with Store.open(url) as store:
        assert store.trials(study) == [written]


def test_strategy_state_is_kept_with_the_study(store: Store, study: str) -> None:
    assert store.strategy_state(study) is None
    state = {"strategy": "random", "version": 1, "seen": ["a", "b"], "rng": {"state": 2**70}}
    store.save_strategy_state(study, state)
    assert store.strategy_state(study) == state
    store.save_strategy_state(study, {**state, "seen": ["a"]})
    assert store.strategy_state(study)["seen"] == ["a"]
    with pytest.raises(StorageError, match="no study named 'nope'"):
        store.save_strategy_state("nope", state)


def test_requeue_starts_a_running_trial_again_as_its_next_attempt(store: Store, study: str) -> None:
    trial = store.start_trial(study, ARCH, KEY)
    again = store.requeue_trial(trial.id)
    assert (again.number, again.attempt, again.state) == (trial.number, 2, TrialState.RUNNING)
    assert again.started_at >= trial.started_at
    assert store.requeue_trial(trial.id).attempt == 3
    store.finish_trial(trial.id, _complete(accuracy=0.5))
    with pytest.raises(StorageError, match="already finished"):
        store.requeue_trial(trial.id)
    with pytest.raises(StorageError, match="no trial with id 999"):
        store.requeue_trial(999)
    assert [t.number for t in store.trials(study)] == [1]


def test_many_trials_are_recorded_at_once_after_the_last(store: Store, study: str) -> None:
    store.record_trial(study, ARCH, KEY, _complete(accuracy=0.1))
    results = [_complete(accuracy=0.2, latency_ms=math.nan), Result.failed("boom"), _complete(accuracy=0.4)]
    assert store.record_trials(study, [(ARCH, f"{i:016d}", r) for i, r in enumerate(results)], batch=2) == 3
    trials = store.trials(study)
    assert [t.number for t in trials] == [1, 2, 3, 4]
    assert [t.values for t in trials[1:]] == [{"accuracy": 0.2}, {}, {"accuracy": 0.4}]
    assert [t.result() for t in trials[1:]] == [_complete(accuracy=0.2), Result.failed("boom"), _complete(accuracy=0.4)]
    with pytest.raises(ValueError, match="not running"):
        store.record_trials(study, [(ARCH, KEY, Result(TrialState.RUNNING))])
    assert len(store.trials(study)) == 4


def test_listing_trials_decodes_an_architecture_only_when_it_is_used(store: Store, study: str) -> None:
    """A 100,000-trial study is listed without decoding 100,000 architectures; each reads back intact on use."""
    archs = [{**ARCH, "slots": [{"op": "conv", "kernel": k}]} for k in (1, 3, 5)]
    store.record_trials(study, ((arch, f"{i:016d}", _complete(accuracy=0.5)) for i, arch in enumerate(archs)))
    for listed in (store.trials(study), store.trial_outcomes(study)):
        assert all("arch" not in vars(record) for record in listed)
        assert [record.arch for record in listed] == archs
    assert store.trials(study) == store.trials(study)
