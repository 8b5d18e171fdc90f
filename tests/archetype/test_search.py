"""The search driver: every trial stored once, lost workers retried, raising evaluations stored as failed,
and an interrupted study resumed to the very trials an uninterrupted run evaluates."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

from archetype.errors import SpecError
from archetype.result import Result, TrialState
from archetype.search import prepare_search, resume_search
from archetype.searchspace import Architecture
from archetype.spec import RunSpec
from archetype.store import Store
from archetype.trial_loop import is_screened, stored_trials
from archetype.worker.evaluator import Budget, Evaluator
from archetype.worker.executor import InlineExecutor, RayExecutor

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules

SPEC = RunSpec(space="conv-small", trials=6, constraints=(), seed=3)


class FormulaEvaluator(Evaluator):
    """Values from the architecture alone (no training), with faults on demand.

    The worker process kills itself (SIGKILL) the first time it sees a key in ``kill_once``
    (remembered in ``kill_dir``) and every time for keys in ``always_kill``; ``raise_for``:
    keys whose evaluation raises MemoryError; ``interrupt_at``: the call that raises
    KeyboardInterrupt.
    """

    def __init__(self, kill_dir: Path | None = None, kill_once: frozenset[str] = frozenset(),
                 always_kill: frozenset[str] = frozenset(), raise_for: frozenset[str] = frozenset(),
                 interrupt_at: int | None = None) -> None:
        self.kill_dir, self.kill_once, self.always_kill = kill_dir, kill_once, always_kill
        self.raise_for, self.interrupt_at, self.calls = raise_for, interrupt_at, 0

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch=None) -> Result:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        if arch.key in self.always_kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if arch.key in self.kill_once and self.kill_dir is not None and not (self.kill_dir / arch.key).exists():
            (self.kill_dir / arch.key).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if arch.key in self.raise_for:
            raise MemoryError("out of memory in the test evaluator")
        return Result(TrialState.COMPLETE, {"accuracy": int(arch.key[:4], 16) / 65536, "latency_ms": arch.macs() / 1e6})


def _search(store: Store, evaluator: Evaluator, executor, spec: RunSpec = SPEC):
    return prepare_search(spec, evaluator).run(store, executor=executor)


@pytest.fixture()
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 'search.db'}") as store:
        yield store


def test_every_trial_is_stored_once_with_the_strategy_state(store: Store) -> None:
    report = _search(store, FormulaEvaluator(), InlineExecutor())
    assert [t.number for t in report.trials] == [1, 2, 3, 4, 5, 6]
    assert all(t.state is TrialState.COMPLETE and t.attempt == 1 for t in report.trials)
    assert report.study.status == "complete"
    _assert_state_resumes_unseen(store, report, SPEC)


@pytest.mark.slow
def test_lost_workers_are_retried_then_stored_as_failed(store: Store, tmp_path: Path) -> None:
    probe = prepare_search(SPEC, FormulaEvaluator()).strategy
    keys = [probe.ask().key for _ in range(SPEC.trials)]  # the same seed asks the same architectures
    doomed, killed_once, raising = keys[2], keys[0], keys[4]
    evaluator = FormulaEvaluator(kill_dir=tmp_path, kill_once=frozenset({killed_once, raising}),
                                 always_kill=frozenset({doomed}), raise_for=frozenset({raising}))
    with RayExecutor(workers=2) as executor:
        report = _search(store, evaluator, executor)
    by_key = {t.arch_key: t for t in report.trials}
    assert [t.number for t in report.trials] == [1, 2, 3, 4, 5, 6] and set(by_key) == set(keys)
    lost = by_key[doomed]
    assert lost.state is TrialState.FAILED and lost.attempt == SPEC.retries + 1
    assert lost.error.startswith("worker lost: ")
    raised = by_key[raising]
    assert raised.state is TrialState.FAILED and raised.attempt == 2  # killed once, then raised: no retry
    assert "MemoryError: out of memory in the test evaluator" in raised.error
    assert by_key[killed_once].state is TrialState.COMPLETE and by_key[killed_once].attempt == 2
    others = [t for k, t in by_key.items() if k not in (doomed, raising, killed_once)]
    assert all(t.state is TrialState.COMPLETE and t.attempt == 1 for t in others)
    assert report.study.status == "complete"


def _assert_state_resumes_unseen(store: Store, report, spec: RunSpec) -> None:
    """The saved state is the strategy's own; with the stored trials it rebuilds a strategy that asks something new."""
    state = store.strategy_state(report.study.name)
    assert state["strategy"] == spec.strategy and "seen" not in state
    strategy = prepare_search(spec, FormulaEvaluator()).strategy
    strategy.restore(state, stored_trials(strategy.space, report.trials))
    assert strategy.ask().key not in {t.arch_key for t in report.trials}


@pytest.mark.parametrize(("strategy", "options"), [
    ("random", {}), ("evolution", {"population": 3, "sample": 2}), ("nsga2", {"population": 2}),
    ("tpe", {"startup": 2}), ("simq", {"initial": 2, "batch": 2, "predicted": 40, "nsga_population": 8}),
])
def test_resume_continues_as_if_never_interrupted(tmp_path: Path, strategy: str, options: dict) -> None:
    spec = replace(SPEC, strategy=strategy, strategy_options=options)
    with Store.open(f"sqlite:///{tmp_path / 'whole.db'}") as whole:
        expected = [t.arch_key for t in _search(whole, FormulaEvaluator(), InlineExecutor(), spec).trials]
    with Store.open(f"sqlite:///{tmp_path / 'cut.db'}") as store:
        with pytest.raises(KeyboardInterrupt):
            _search(store, FormulaEvaluator(interrupt_at=4), InlineExecutor(), spec)
        name = store.list_studies()[0].name
        assert store.get_study(name).status == "interrupted"
        before = store.trials(name)
        assert [t.state for t in before] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING]

        report = resume_search(store, name, evaluator=FormulaEvaluator(), executor=InlineExecutor())
        assert [t.arch_key for t in report.trials] == expected
        assert [t.number for t in report.trials] == [1, 2, 3, 4, 5, 6]
        assert report.trials[:3] == before[:3]  # finished trials are not run again
        assert report.trials[3].attempt == 2 and report.trials[3].state is TrialState.COMPLETE
        assert report.study.status == "complete"

        with pytest.raises(Exception, match="already has its 6 trials"):
            resume_search(store, name, evaluator=FormulaEvaluator(), executor=InlineExecutor())
        longer = resume_search(store, name, trials=8, evaluator=FormulaEvaluator(), executor=InlineExecutor())
        assert [t.number for t in longer.trials] == list(range(1, 9))
        assert len({t.arch_key for t in longer.trials}) == 8


def test_spec_refuses_negative_retries() -> None:
    with pytest.raises(Exception, match="retries must be a non-negative integer"):
        RunSpec(space="conv-small", retries=-1)


@pytest.mark.parametrize(("fields", "message"), [
    ({"precision": ["fp32", "int4"]}, r"precision must be distinct values among \['fp32', 'int8'\], got"),
    ({"precision": "int8"}, "precision must be distinct values among"),
    ({"precision": ["int8", "int8"]}, "precision must be distinct values among"),
    ({"precision": ["fp32", "int8"], "target": "cpu-ort-int8"}, "measured on target 'cpu-ort', not 'cpu-ort-int8'"),
    ({"precision": ["fp32", "int8"], "strategy": "oneshot"}, "'oneshot' scores candidates on an fp32 supernet"),
])
def test_spec_refuses_a_bad_precision(fields, message) -> None:
    with pytest.raises(SpecError, match=message):
        RunSpec.from_mapping({"space": "conv-small", **fields}, where="run.yaml")


def test_a_precision_spec_searches_a_space_with_precision() -> None:
    spec = RunSpec.from_mapping({"space": "conv-small", "precision": ["fp32", "int8"], "strategy": "simq"})
    assert spec.precision == ("fp32", "int8") and RunSpec.from_mapping(spec.to_json()) == spec
    search = prepare_search(spec, evaluator=EpochEvaluator())
    assert any("precision" in dict(c.domain) for slot in search.space.slots for c in slot.candidates)


class EpochEvaluator(Evaluator):
    """Accuracy grows with each epoch towards a value fixed by the architecture; reported every epoch."""

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch=None) -> Result:
        final = int(arch.key[:4], 16) / 65536
        for epoch in range(1, budget.epochs + 1):
            if on_epoch is not None:
                on_epoch(epoch, Result(TrialState.PRUNED, {"accuracy": final * epoch / budget.epochs},
                                       error=f"stopped early after epoch {epoch} of {budget.epochs}"))
        return Result(TrialState.COMPLETE, {"accuracy": final, "latency_ms": arch.macs() / 1e6})


@pytest.mark.slow
def test_asha_through_tune_stops_weak_candidates_and_stores_every_trial(store: Store) -> None:
    spec = RunSpec(space="conv-small", trials=8, epochs=9, constraints=(), seed=5, scheduler="asha")
    report = prepare_search(spec, EpochEvaluator()).run(store)
    trials = report.trials
    assert [t.number for t in trials] == list(range(1, 9)) and len({t.arch_key for t in trials}) == 8
    assert report.study.status == "complete"
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert pruned and complete, [t.state for t in trials]
    for t in pruned:  # stopped at a rung (epoch 1 or 3 of 9) with the accuracy reached there
        epoch = int(t.error.split("after epoch ")[1].split()[0])
        assert epoch in (1, 3) and t.values["accuracy"] == pytest.approx(int(t.arch_key[:4], 16) / 65536 * epoch / 9)
    for t in complete:
        assert t.values["accuracy"] == pytest.approx(int(t.arch_key[:4], 16) / 65536)
    best = max(trials, key=lambda t: int(t.arch_key[:4], 16))
    assert best.state is TrialState.COMPLETE  # ASHA never stops the best candidate
    _assert_state_resumes_unseen(store, report, spec)


class KeyRecordingEvaluator(FormulaEvaluator):
    """A FormulaEvaluator that remembers which architectures it evaluated."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch=None) -> Result:
        self.keys.append(arch.key)
        return super().evaluate(arch, budget, on_epoch)


def test_a_latency_table_prunes_hopeless_candidates_without_evaluating_them(store: Store) -> None:
    from dataclasses import replace

    from archetype.latency_tables import OVERHEAD_KEY, LatencyTable, space_instances
    from archetype.objectives import Constraint
    from archetype.runtime.targets import get_target
    from archetype.searchspace.operator import make_operator
    from archetype.store import LatencyRecord

    spec = replace(SPEC, target="cpu-torch", trials=12)
    space = prepare_search(spec, FormulaEvaluator()).space
    device = LatencyTable(store, get_target("cpu-torch")).device
    # a table that predicts exactly what FormulaEvaluator measures, plus 0.01 ms of overhead
    entries = [LatencyRecord(OVERHEAD_KEY, {}, 0.01, 0.0)] + [
        LatencyRecord(i.key, i.to_json(), 0.01 + make_operator(i.op, dict(i.params)).macs(i.input) / 1e6, 0.0)
        for i in space_instances(space)
    ]
    store.put_latency_entries("cpu-torch", device, entries)
    macs = sorted(a.macs() / 1e6 for a in (space.sample(np.random.default_rng(s)) for s in range(40)))
    budget = macs[len(macs) // 2]
    spec = replace(spec, constraints=(Constraint("latency_ms", "<=", budget),))
    evaluator = KeyRecordingEvaluator()
    report = _search(store, evaluator, InlineExecutor(), spec)

    assert [t.number for t in report.trials] == list(range(1, len(report.trials) + 1))
    pruned = [t for t in report.trials if t.state is TrialState.PRUNED]
    measured = [t for t in report.trials if t.state is TrialState.COMPLETE]
    assert pruned and len(measured) == 12 and len(pruned) + len(measured) == len(report.trials)
    assert all(is_screened(t) for t in pruned) and not any(is_screened(t) for t in measured)
    assert report.loop["evaluated"] == 12 and report.loop["screened"] == len(pruned)
    for t in pruned:
        assert t.values["predicted_latency_ms"] > 1.2 * budget and "latency_ms" not in t.values
        assert t.error.startswith("predicted latency_ms ") and t.error.endswith("not trained or measured")
        assert t.arch_key not in evaluator.keys
    for t in measured:
        assert t.values["predicted_latency_ms"] <= 1.2 * budget
        assert t.values["latency_ms"] == pytest.approx(t.values["predicted_latency_ms"] - 0.01)
    assert sorted(evaluator.keys) == sorted(t.arch_key for t in measured)

    off = _search(store, KeyRecordingEvaluator(), InlineExecutor(), replace(spec, predict_latency=False))
    assert all(t.state is TrialState.COMPLETE for t in off.trials)


def test_a_study_stored_before_recipes_resumes_with_the_plain_schedule_and_a_new_one_with_its_own(tmp_path):
    from archetype.objectives import DEFAULT_OBJECTIVES
    from archetype.search import stored_spec

    with Store.open(f"sqlite:///{tmp_path / 'r.db'}") as store:
        for name, extra in (("old", {}), ("new", {"recipe": "full"})):
            store.create_study(name, space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                               constraints=(), spec={"space": "conv-small", **extra})
        assert stored_spec(store, "old").recipe == "plain"
        assert stored_spec(store, "new").recipe == "full"
        search = prepare_search(stored_spec(store, "new"))
    assert search.evaluator.train.ema > 0 and search.evaluator.train.device == "auto"
