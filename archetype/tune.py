"""Searching through Ray Tune: the strategy proposes as a Tune searcher, ASHA stops weak candidates on epochs.

Tune drives the trials; the searcher (which runs in the driver) proposes and stores
through the study's ``TrialLoop``, so a study looks the same whichever way it ran. A
candidate ASHA stops early is stored as PRUNED with the accuracy it had reached;
resuming works as for the plain executor.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.trial_loop import TrialLoop
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
    """One study's candidates run through Tune: the trial loop proposes and stores, Tune runs and stops them."""

    loop: TrialLoop

    def __post_init__(self) -> None:
        self._live: dict[str, tuple[int, Architecture]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher into its own experiment files; the live object, not a copy, runs the study
        return {"_live": {}}

    def suggest(self, tune_trial: str) -> dict[str, Any] | None:
        candidate = self.loop.propose()
        if candidate is None:
            return None
        trial_id, arch, _ = candidate
        self._live[tune_trial] = (trial_id, arch)
        return {"arch": arch.to_json()}

    def complete(self, tune_trial: str, reported: dict[str, Any] | None, error: bool) -> None:
        trial_id, arch = self._live.pop(tune_trial)
        if reported is None or RESULT not in reported:
            result = Result.failed("the trial's worker failed before it reported (see Ray's logs)")
        else:
            result = Result.from_json(json.loads(reported[RESULT]))
            if error:
                result = Result.failed(f"the trial's worker failed after epoch {reported.get('epoch')}",
                                       values=result.values, target=result.target, fingerprint=result.fingerprint)
        self.loop.finish(trial_id, arch, result)


def run_with_tune(
    loop: TrialLoop,
    evaluator: Evaluator,
    *,
    workers: int,
    cpus_per_trial: float,
    gpus_per_trial: float = 0.0,
    asha: AshaSettings | None = None,
    ray_address: str | None = None,
) -> None:
    """Run the candidates of ``loop`` as Tune trials, ``workers`` at once, with ASHA on validation accuracy."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: stdout stays ours
    runtime = RayRuntime(workers, cpus_per_trial, ray_address)
    try:
        asha = asha or AshaSettings()
        epochs = loop.budget.epochs
        total = max(1, loop.trials - loop.tally.evaluated, len(loop.requeued))
        searcher = ConcurrencyLimiter(_searcher_class()(TuneRun(loop)), max_concurrent=workers)
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
                run_config=tune.RunConfig(name=loop.study, storage_path=folder, verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=loop.retries)),
            )
            tuner.fit()
    finally:
        runtime.stop()
