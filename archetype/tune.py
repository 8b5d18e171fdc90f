"""Searching through Ray Tune: the strategy proposes as a Tune searcher, ASHA stops weak candidates on epochs.

Tune drives the trials; the store still receives every trial the moment it ends,
from the searcher (which runs in the driver), so a study looks the same whichever
way it ran. A candidate ASHA stops early is stored as PRUNED with the accuracy it
had reached; resuming works as for the plain executor.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archetype.latency_screen import LatencyScreen
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.store import Store, TrialRecord
from archetype.strategies import Strategy
from archetype.worker.evaluator import Budget, Evaluator
from archetype.worker.executor import RayRuntime

RESULT = "archetype_result"
"""The reported metric that carries the whole Result as JSON (Tune flattens nested dicts)."""


@dataclass(frozen=True)
class AshaSettings:
    """ASHA's rungs: a candidate must rank in the top 1/``reduction_factor`` at each rung to go on."""

    grace_period: int = 1  # epochs every candidate gets
    reduction_factor: int = 3


def _train_candidate(config: dict[str, Any], evaluator: Evaluator, epochs: int) -> None:
    """The Tune trainable: evaluate one architecture, reporting accuracy after every epoch."""
    from ray import tune

    arch = Architecture.from_json(config["arch"])

    def report(epoch: int, so_far: Result) -> None:
        if epoch == epochs:  # the final report below carries it; a rung there would stop a finished candidate
            return
        tune.report(_metrics(epoch, so_far))

    result = evaluator.evaluate(arch, Budget(epochs=epochs), on_epoch=report)
    # the last report: the whole result, at max_t so that ASHA's rungs never see it
    tune.report(_metrics(epochs + 1, result))


def _metrics(epoch: int, result: Result) -> dict[str, Any]:
    return {"epoch": epoch, "accuracy": result.values.get("accuracy", 0.0), RESULT: json.dumps(result.to_json())}


def _searcher_class() -> type:
    from ray.tune.search import Searcher

    class StrategySearcher(Searcher):
        """Hands Tune the strategy's proposals and stores each finished trial, then tells the strategy."""

        def __init__(self, run: TuneRun) -> None:
            super().__init__(metric="accuracy", mode="max")
            self.run = run

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            return self.run.suggest(trial_id) or Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            self.run.complete(trial_id, result, error)

    return StrategySearcher


@dataclass
class TuneRun:
    """One study's trials run through Tune: what is still to ask, and which Tune trial is which stored trial."""

    study: str
    store: Store
    strategy: Strategy
    to_ask: int
    requeued: deque[tuple[int, Architecture]]
    on_trial: Callable[[TrialRecord], None] | None = None
    screen: LatencyScreen | None = None  # prunes candidates by predicted latency before Tune sees them

    def __post_init__(self) -> None:
        self._live: dict[str, tuple[int, Architecture]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher into its own experiment files; the live object, not a copy, runs the study
        return {**self.__dict__, "store": None, "on_trial": None, "screen": None}

    def suggest(self, tune_trial: str) -> dict[str, Any] | None:
        if self.requeued:
            trial_id, arch = self.requeued.popleft()
            self._live[tune_trial] = (trial_id, arch)
            return {"arch": arch.to_json()}
        while self.to_ask > 0:
            arch = self.strategy.ask()
            self.to_ask -= 1
            pruned = self.screen.verdict(arch) if self.screen is not None else None
            if pruned is not None:
                self._store_and_tell(self.store.record_trial(self.study, arch.to_json(), arch.key, pruned), arch)
                continue
            trial_id = self.store.start_trial(self.study, arch.to_json(), arch.key).id
            self.store.save_strategy_state(self.study, self.strategy.state_dict())
            self._live[tune_trial] = (trial_id, arch)
            return {"arch": arch.to_json()}
        return None

    def complete(self, tune_trial: str, reported: dict[str, Any] | None, error: bool) -> None:
        trial_id, arch = self._live.pop(tune_trial)
        if reported is None or RESULT not in reported:
            result = Result.failed("the trial's worker failed before it reported (see Ray's logs)")
        else:
            result = Result.from_json(json.loads(reported[RESULT]))
            if error:
                result = Result.failed(f"the trial's worker failed after epoch {reported.get('epoch')}",
                                       values=result.values, target=result.target, fingerprint=result.fingerprint)
        self._store_and_tell(self.store.finish_trial(trial_id, result), arch)

    def _store_and_tell(self, record: TrialRecord, arch: Architecture) -> None:
        self.strategy.tell(arch, record.result())
        self.store.save_strategy_state(self.study, self.strategy.state_dict())
        if self.on_trial is not None:
            self.on_trial(record)


def run_with_tune(
    run: TuneRun,
    evaluator: Evaluator,
    *,
    epochs: int,
    workers: int,
    cpus_per_trial: float,
    gpus_per_trial: float = 0.0,
    retries: int,
    asha: AshaSettings,
    ray_address: str | None = None,
) -> None:
    """Run every trial of ``run`` as a Tune trial, ``workers`` at once, with ASHA on validation accuracy."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: stdout stays ours
    runtime = RayRuntime(workers, cpus_per_trial, ray_address)
    try:
        total = run.to_ask + len(run.requeued)
        searcher = ConcurrencyLimiter(_searcher_class()(run), max_concurrent=workers)
        scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs + 1, grace_period=asha.grace_period,
                                  reduction_factor=asha.reduction_factor)
        trainable = tune.with_resources(
            tune.with_parameters(_train_candidate, evaluator=evaluator, epochs=epochs),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        )
        with tempfile.TemporaryDirectory(prefix="archetype-tune-") as folder:  # Tune's own files; the store keeps ours
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=total,
                                            metric="accuracy", mode="max", reuse_actors=True),
                run_config=tune.RunConfig(name=run.study, storage_path=folder, verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=retries)),
            )
            tuner.fit()
    finally:
        runtime.stop()
