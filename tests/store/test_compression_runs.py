"""Compression runs in the store: linked to their source trial, steps in order, clean errors."""

from __future__ import annotations

import pytest

from archetype.errors import StorageError
from archetype.result import Result, TrialState
from archetype.store import CompressionStatus, Store

BUDGET = {"latency_ms": 0.5, "max_accuracy_drop": 1.0}


def test_a_run_from_a_trial_keeps_its_link_and_steps_in_order(store: Store, study: str) -> None:
    trial = store.record_trial(study, {"slots": []}, "k" * 16, Result(TrialState.COMPLETE, values={"accuracy": 0.9}))
    store.create_compression_run(
        "run-1", source=f"{study}:{trial.number}", target="cpu-ort", budget=BUDGET,
        pipeline=["prune", "quantize"], source_trial=(study, trial.number), out_dir="out",
    )
    store.add_compression_step("run-1", name="source", accepted=True, metrics={"latency_ms": 1.0, "accuracy": 0.9})
    store.add_compression_step("run-1", name="prune", accepted=False, metrics={"latency_ms": 1.1},
                               message="no faster on cpu-ort", seconds=2.5)
    store.add_compression_step("run-1", name="quantize", accepted=True, metrics={"latency_ms": 0.4},
                               details={"policy": {"conv1": "int8"}})
    store.finish_compression_run("run-1", "complete", report={"speedup": 2.5})

    run = store.compression_run("run-1")
    assert (run.source_study, run.source_trial) == (study, trial.number)
    assert run.status is CompressionStatus.COMPLETE and run.finished_at is not None
    assert [(s.position, s.name, s.accepted) for s in run.steps] == [
        (0, "source", True), (1, "prune", False), (2, "quantize", True)]
    assert run.steps[1].message == "no faster on cpu-ort" and run.steps[1].seconds == 2.5
    assert run.steps[2].details == {"policy": {"conv1": "int8"}}
    assert run.report == {"speedup": 2.5} and run.pipeline == ["prune", "quantize"]
    assert [r.name for r in store.compression_runs()] == ["run-1"]


def test_names_are_numbered_and_unique(store: Store) -> None:
    assert store.next_compression_name("model") == "model-1"
    store.create_compression_run("model-1", source="m.pt", target="cpu-ort", budget=BUDGET, pipeline=["prune"])
    assert store.next_compression_name("model") == "model-2"
    with pytest.raises(StorageError, match="already exists"):
        store.create_compression_run("model-1", source="m.pt", target="cpu-ort", budget=BUDGET, pipeline=[])


def test_a_missing_source_trial_or_run_is_a_clean_error_and_writes_nothing(store: Store, study: str) -> None:
    with pytest.raises(StorageError, match="no trial number 7"):
        store.create_compression_run("bad", source="x", target="cpu-ort", budget={}, pipeline=[],
                                     source_trial=(study, 7))
    assert store.compression_runs() == []
    with pytest.raises(StorageError, match="no compression run named 'nope'"):
        store.add_compression_step("nope", name="prune", accepted=True, metrics={})
    with pytest.raises(ValueError, match="not running"):
        store.finish_compression_run("nope", "running")
