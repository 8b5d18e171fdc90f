"""The one trial loop: the same study through the plain, Tune and one-shot paths stores trials of one shape;
--trials counts evaluated candidates, screened ones are capped, and a time budget holds across resumes."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

from archetype.errors import SpecError
from archetype.latency_screen import LatencyScreen
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.search import prepare_search
from archetype.searchspace import Architecture, Image, get_space
from archetype.spec import RunSpec
from archetype.store import Store
from archetype.strategies import make_strategy
from archetype.trial_loop import SCREEN_CAP, StopReason, TrialLoop, is_screened
from archetype.worker.evaluator import Budget, Evaluator
from archetype.worker.executor import InlineExecutor

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules

SPEC = RunSpec(space="pool-positions", trials=4, epochs=1, seed=2, constraints=(Constraint("latency_ms", "<=", 5.0),))
TRAINED_VALUES = {"accuracy", "latency_ms", "params", "macs"}


class FormulaEvaluator(Evaluator):
    """Values from the architecture alone: no training, the same answer wherever it runs."""

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch=None) -> Result:
        values = {"accuracy": int(arch.key[:4], 16) / 65536, "latency_ms": arch.macs() / 1e6,
                  "params": float(arch.params()), "macs": float(arch.macs())}
        return Result(TrialState.COMPLETE, values, timings={"total_s": 0.0})


class Ticking:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture()
def store(tmp_path: Path):
    with Store.open(f"sqlite:///{tmp_path / 'loop.db'}") as store:
        yield store


def _assert_trained_shape(trials, space) -> None:
    for trial in trials:
        assert trial.state is TrialState.COMPLETE and trial.attempt == 1 and trial.finished_at is not None
        assert set(trial.values) >= TRAINED_VALUES and not is_screened(trial)
        assert space.architecture_from_json(trial.arch).key == trial.arch_key


@pytest.mark.slow
def test_plain_tune_and_oneshot_paths_store_trials_of_one_shape(store: Store) -> None:
    plain = prepare_search(SPEC, FormulaEvaluator())
    by_path = {"plain": plain.run(store, executor=InlineExecutor())}
    by_path["tune"] = prepare_search(replace(SPEC, scheduler="asha"), FormulaEvaluator()).run(store)
    oneshot = prepare_search(replace(SPEC, strategy="oneshot", supernet_epochs=1, finalists=2), FormulaEvaluator())
    oneshot.scoring.latency = lambda arch: arch.macs() / 1e6
    by_path["oneshot"] = oneshot.run(store, executor=InlineExecutor())

    for path, report in by_path.items():
        assert report.study.status == "complete", path
        assert [t.number for t in report.trials] == list(range(1, len(report.trials) + 1)), path
        assert report.loop["evaluated"] == SPEC.trials + (2 if path == "oneshot" else 0), path
        trained = [t for t in report.trials if "supernet_accuracy" not in t.values]
        _assert_trained_shape(trained, plain.space)
        assert report.front and {t.number for t in report.front} <= {t.number for t in trained}, path
    assert len(by_path["plain"].trials) == len(by_path["tune"].trials) == SPEC.trials
    scored = [t for t in by_path["oneshot"].trials if "supernet_accuracy" in t.values]
    assert len(scored) == SPEC.trials and all("supernet_score_s" in t.timings for t in scored)
    assert all(t.state is TrialState.COMPLETE and t.attempt == 1 for t in scored)


def _loop(store: Store, study: str, *, trials: int, clock=None, time_budget_s=None, screen=None) -> TrialLoop:
    space = get_space("conv-small", Image(1, 8, 8), 10)
    if study not in {s.name for s in store.list_studies()}:
        store.create_study(study, space=space.name, target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=(), spec={"space": space.name})
    strategy = make_strategy("random", space, DEFAULT_OBJECTIVES, seed=0)
    options = {"clock": clock} if clock is not None else {}
    return TrialLoop(store, study, strategy, trials=trials, epochs=1, screen=screen, time_budget_s=time_budget_s,
                     **options)


def test_screened_candidates_do_not_count_as_trials_and_are_capped(store: Store) -> None:
    space = get_space("conv-small", Image(1, 8, 8), 10)
    macs = sorted(space.sample(np.random.default_rng(s)).macs() for s in range(40))
    budget = macs[len(macs) // 2] / 1e6  # about half the space predicted over it
    loop = _loop(store, "half", trials=5, screen=LatencyScreen(lambda a: a.macs() / 1e6, budget, margin=0.0))
    loop.run(InlineExecutor(), FormulaEvaluator())
    trials = store.trials("half")
    screened = [t for t in trials if is_screened(t)]
    assert len(trials) - len(screened) == 5 and screened
    assert all(t.state is TrialState.PRUNED and t.values["predicted_latency_ms"] > budget for t in screened)
    assert loop.summary()["evaluated"] == 5 and loop.summary()["screened"] == len(screened)
    assert loop.stop_reason() is StopReason.TRIALS

    hopeless = _loop(store, "hopeless", trials=2, screen=LatencyScreen(lambda a: 1e9, 1.0))
    hopeless.run(InlineExecutor(), FormulaEvaluator())
    assert len(store.trials("hopeless")) == SCREEN_CAP * 2 and hopeless.tally.evaluated == 0
    assert hopeless.stop_reason() is StopReason.SCREENED


def test_a_time_budget_stops_the_study_and_a_resume_gets_what_is_left(store: Store) -> None:
    first = _loop(store, "timed", trials=100, clock=Ticking(1.0), time_budget_s=20.0)
    first.run(InlineExecutor(), FormulaEvaluator())
    done = len(store.trials("timed"))
    assert 0 < done < 100 and first.stop_reason() is StopReason.TIME
    assert all(t.state is TrialState.COMPLETE for t in store.trials("timed"))  # running trials finish, stored

    spent = _loop(store, "timed", trials=100, clock=Ticking(1.0), time_budget_s=20.0)
    spent.resume(spent.strategy.space)
    with pytest.raises(SpecError, match="spent its time budget of 20 s"):
        spent.check_resumable()

    more = _loop(store, "timed", trials=100, clock=Ticking(1.0), time_budget_s=40.0)
    more.resume(more.strategy.space)
    assert more.tally.evaluated == done and 0 < more.time_left_s() <= 20.0
    more.run(InlineExecutor(), FormulaEvaluator())
    assert done < len(store.trials("timed")) < 100 and more.stop_reason() is StopReason.TIME
    assert store.strategy_state("timed")["loop"]["elapsed_s"] >= 40.0


def test_a_resume_asks_for_the_trials_still_to_evaluate(store: Store) -> None:
    first = _loop(store, "grow", trials=3)
    first.run(InlineExecutor(), FormulaEvaluator())
    again = _loop(store, "grow", trials=3)
    again.resume(again.strategy.space)
    with pytest.raises(SpecError, match="already has its 3 trials"):
        again.check_resumable()
    grown = _loop(store, "grow", trials=5)
    grown.resume(grown.strategy.space)
    grown.run(InlineExecutor(), FormulaEvaluator())
    assert [t.number for t in store.trials("grow")] == [1, 2, 3, 4, 5]
