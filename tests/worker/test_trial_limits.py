"""Trial limits on real evaluations: a slow one is stopped at its wall-clock limit, a large one at its memory limit,
each stored as failed with the reason, and the worker replaced so that the next evaluation runs."""

from __future__ import annotations

import numpy as np
import pytest

from archetype.result import TrialState
from archetype.runtime.data import load_dataset
from archetype.runtime.training import TrainConfig
from archetype.searchspace import Image, get_space
from archetype.worker.evaluator import Budget, TrainingEvaluator
from archetype.worker.executor import RayExecutor, TrialLimits, default_trial_timeout_s, resident_mb


@pytest.fixture(scope="module")
def arch():
    return get_space("conv-small", Image(1, 8, 8), 10).sample(np.random.default_rng(0))


def _evaluator() -> TrainingEvaluator:
    return TrainingEvaluator("digits", "cpu-torch", train=TrainConfig(epochs=1, threads=1))


@pytest.mark.slow
def test_a_slow_evaluation_is_stopped_at_its_time_limit_and_the_next_one_runs(arch) -> None:
    with RayExecutor(workers=1, limits=TrialLimits(timeout_s=20.0)) as executor:
        executor.submit("slow", _evaluator(), arch, Budget(epochs=2000))  # minutes of real training
        executor.submit("quick", _evaluator(), arch, Budget(epochs=0))
        results = dict(executor.next_result() for _ in range(2))
    slow, quick = results["slow"], results["quick"]
    assert slow.state is TrialState.FAILED and not slow.retryable
    assert slow.error == "stopped after 20 s: over the trial's wall-clock limit (trial_timeout_s)"
    assert quick.state is TrialState.COMPLETE and quick.values["accuracy"] >= 0


@pytest.mark.slow
def test_an_evaluation_over_its_memory_limit_is_stopped(arch) -> None:
    with RayExecutor(workers=1, limits=TrialLimits(memory_mb=30.0)) as executor:  # a torch worker holds far more
        executor.submit("big", _evaluator(), arch, Budget(epochs=50))
        tag, result = executor.next_result()
    assert tag == "big" and result.state is TrialState.FAILED
    assert result.error.startswith("stopped at ") and "over the trial's memory limit of 30 MB" in result.error


def test_the_default_time_limit_grows_with_epochs_and_data() -> None:
    assert default_trial_timeout_s(5, 1000) < default_trial_timeout_s(50, 1000) < default_trial_timeout_s(50, 60000)
    assert default_trial_timeout_s(1, 1) >= 600


def test_resident_memory_of_this_process_is_read() -> None:
    import os

    used = resident_mb(os.getpid())
    assert used is None or used > 10  # None where /proc is absent; a Python with torch holds far more than 10 MB
    assert resident_mb(2**30) is None


def test_the_run_spec_sets_the_limits_of_a_search() -> None:
    from archetype.search import prepare_search
    from archetype.spec import RunSpec

    given = prepare_search(RunSpec(space="conv-small", trial_timeout_s=7, trial_memory_mb=900))
    assert given.trial_limits == TrialLimits(7, 900)
    derived = prepare_search(RunSpec(space="conv-small", epochs=3)).trial_limits
    assert derived.timeout_s == default_trial_timeout_s(3, len(load_dataset("digits").train))
    assert derived.memory_mb is None or derived.memory_mb > 0
    assert prepare_search(RunSpec(space="conv-small", max_params=500_000)).evaluator.limits.max_params == 500_000
