"""RayExecutor on a real local Ray runtime: reused workers, a worker killed with SIGKILL, a call that raises."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

from archetype.result import Result, TrialState
from archetype.searchspace import Architecture, Image, get_space
from archetype.worker.evaluator import Budget, Evaluator
from archetype.worker.executor import InlineExecutor, RayExecutor

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules

BUDGET = Budget(epochs=1)


class PidEvaluator(Evaluator):
    """Reports the process it ran in; kills that process instead while ``kill_marker`` is absent."""

    def __init__(self, kill_marker: Path | None = None, raise_in_call: bool = False) -> None:
        self.kill_marker = kill_marker
        self.raise_in_call = raise_in_call

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch=None) -> Result:
        if self.raise_in_call:
            raise RuntimeError("the evaluator itself broke")
        if self.kill_marker is not None and not self.kill_marker.exists():
            self.kill_marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return Result(TrialState.COMPLETE, {"pid": float(os.getpid()), "params": float(arch.params())})


@pytest.fixture(scope="module")
def archs() -> list[Architecture]:
    space = get_space("conv-small", Image(1, 8, 8), 10)
    rng = np.random.default_rng(0)
    return [space.sample(rng) for _ in range(4)]


@pytest.fixture(scope="module")
def executor():
    with RayExecutor(workers=2) as executor:
        yield executor


def _run_all(executor, evaluator: Evaluator, archs: list[Architecture]) -> dict[int, Result]:
    for i, arch in enumerate(archs):
        executor.submit(i, evaluator, arch, BUDGET)
    assert executor.pending() == len(archs)
    results = dict(executor.next_result() for _ in archs)
    assert executor.pending() == 0
    return results


def test_workers_are_reused_across_evaluations(executor, archs) -> None:
    results = _run_all(executor, PidEvaluator(), archs * 2)
    assert all(r.state is TrialState.COMPLETE for r in results.values())
    pids = {r.values["pid"] for r in results.values()}
    assert pids <= set(map(float, executor.worker_pids())) and 1 <= len(pids) <= 2  # 8 calls, 2 processes
    assert pids.isdisjoint({float(os.getpid())})


def test_a_killed_worker_is_replaced_and_its_evaluation_is_retryable(executor, archs, tmp_path) -> None:
    before = set(executor.worker_pids())
    [lost] = _run_all(executor, PidEvaluator(kill_marker=tmp_path / "killed"), archs[:1]).values()
    assert lost.state is TrialState.FAILED and lost.retryable
    assert lost.error.startswith("worker lost: ")
    after = executor.worker_pids()
    assert len(after) == 2 and len(set(after) - before) == 1  # one new process in place of the dead one
    again = _run_all(executor, PidEvaluator(kill_marker=tmp_path / "killed"), archs)
    assert all(r.state is TrialState.COMPLETE and not r.retryable for r in again.values())


def test_a_call_that_raises_fails_without_retry(executor, archs) -> None:
    results = _run_all(executor, PidEvaluator(raise_in_call=True), archs[:2])
    for result in results.values():
        assert result.state is TrialState.FAILED and not result.retryable
        assert "the evaluator itself broke" in result.error
    assert len(executor.worker_pids()) == 2


def test_inline_executor_runs_in_order(archs) -> None:
    results = _run_all(InlineExecutor(), PidEvaluator(), archs)
    assert list(results) == [0, 1, 2, 3]
    assert {r.values["pid"] for r in results.values()} == {float(os.getpid())}
