"""The one-shot search path: train supernets once, score many candidates with inherited weights, retrain the best.

1. The supernet (or a balanced mixture of ``spec.supernets``) is trained in one Ray task (in-process
   when the caller gives a non-Ray executor).
2. The ``oneshot`` strategy evolves candidates; each is scored by validation accuracy with inherited
   weights (batch norm recalibrated) and by a latency callable, and stored at once as a complete trial
   whose values say ``supernet_accuracy`` (never ``accuracy``, so it stays off the measured front).
3. The ``spec.finalists`` best candidates within the constraints are trained from scratch and measured
   by the evaluator like any trial, so the front holds measured figures only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from archetype.objectives import within_budget
from archetype.result import Result, TrialState
from archetype.runtime.data import load_dataset
from archetype.searchspace.architecture import Architecture
from archetype.worker.evaluator import Budget
from archetype.worker.executor import Executor, RayExecutor, RayRuntime
from archetype.worker.supernet_training import SupernetConfig, SupernetTrainer, train_on_ray

if TYPE_CHECKING:
    from archetype.search import Search
    from archetype.store import Store, TrialRecord

LatencyFn = Callable[[Architecture], float]
"""Predicted (or measured) latency of an architecture in ms."""


class MeasuredLatency:
    """The default latency callable: the architecture built and measured on the target, cached by key."""

    def __init__(self, target: str, threads: int = 1) -> None:
        from archetype.runtime.targets import get_target

        self.target = get_target(target, threads=threads)
        self._cache: dict[str, float] = {}

    def __call__(self, arch: Architecture) -> float:
        if arch.key not in self._cache:
            self._cache[arch.key] = self.target.measure(arch.build().eval(), arch.input).median_ms
        return self._cache[arch.key]


def supernet_config(search: Search) -> SupernetConfig:
    """The supernet training settings a run spec implies."""
    spec = search.spec
    return SupernetConfig(
        epochs=spec.supernet_epochs or 4 * spec.epochs,
        seed=spec.seed,
        threads=max(1, int(spec.trial_cpus())),
        device=spec.device,
        supernets=spec.supernets,
    )


@dataclass(frozen=True)
class TableLatency:
    """A latency table's prediction, measured instead where the table lacks one of the operators."""

    predict: Callable[[Architecture], float | None]
    fallback: LatencyFn

    def __call__(self, arch: Architecture) -> float:
        predicted = self.predict(arch)
        return self.fallback(arch) if predicted is None else predicted


def run_oneshot(
    search: Search,
    store: Store,
    name: str,
    executor: Executor | None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    latency: LatencyFn | None = None,
) -> None:
    """Run steps 1-3 for study ``name``; every scored and every retrained candidate is stored as a trial."""
    spec, space, strategy = search.spec, search.space, search.strategy
    config = supernet_config(search)
    dataset = load_dataset(spec.data, spec.seed)
    trainer = SupernetTrainer(space, dataset, config)
    owns_executor = executor is None
    runtime = None
    try:
        if executor is not None and not isinstance(executor, RayExecutor):
            trainer.train()  # the caller runs evaluations in-process: train here too
        else:
            # one runtime for the training task and then the workers; each holds its CPUs only while it runs
            runtime = RayRuntime(spec.workers, spec.trial_cpus(), spec.ray_address)
            trainer.load_state_dict(train_on_ray(space, spec.data, config, ray_address=spec.ray_address,
                                                 cpus=spec.trial_cpus(), gpus=spec.trial_gpus()))
            executor = executor or RayExecutor(spec.workers, spec.trial_cpus(), spec.ray_address,
                                               limits=search.trial_limits, gpus_per_trial=spec.trial_gpus())
        latency = latency or MeasuredLatency(spec.target, threads=1)
        scored: list[tuple[float, Architecture]] = []
        for _ in range(spec.trials):
            arch = strategy.ask()
            result = score_candidate(trainer, arch, latency, spec.target)
            record = store.record_trial(name, arch.to_json(), arch.key, result)
            strategy.tell(arch, record.result())
            store.save_strategy_state(name, strategy.state_dict())
            if within_budget(result.values, spec.constraints):  # a missing constrained value is not within budget
                scored.append((result.values["supernet_accuracy"], arch))
            if on_trial is not None:
                on_trial(record)
        _retrain_finalists(search, store, name, executor, _finalists(scored, spec.finalists), on_trial)
    finally:
        if owns_executor and executor is not None:
            executor.shutdown()
        if runtime is not None:
            runtime.stop()


def score_candidate(trainer: SupernetTrainer, arch: Architecture, latency: LatencyFn, target: str) -> Result:
    """A complete Result with the candidate's inherited-weight accuracy and its latency from ``latency``."""
    start = time.perf_counter()
    accuracy = trainer.score(arch)
    scored = time.perf_counter()
    values = {
        "supernet_accuracy": accuracy,
        "latency_ms": float(latency(arch)),
        "params": float(arch.params()),
        "macs": float(arch.macs()),
    }
    timings = {"supernet_score_s": scored - start, "latency_s": time.perf_counter() - scored}
    timings["total_s"] = time.perf_counter() - start
    return Result(TrialState.COMPLETE, values=values, timings=timings, target=target)


def _finalists(scored: list[tuple[float, Architecture]], count: int) -> list[Architecture]:
    best: dict[str, tuple[float, Architecture]] = {}
    for accuracy, arch in scored:
        if arch.key not in best or accuracy > best[arch.key][0]:
            best[arch.key] = (accuracy, arch)
    ranked = sorted(best.values(), key=lambda item: -item[0])
    return [arch for _, arch in ranked[:count]]


def _retrain_finalists(
    search: Search,
    store: Store,
    name: str,
    executor: Executor,
    finalists: list[Architecture],
    on_trial: Callable[[TrialRecord], None] | None,
) -> None:
    """Train each finalist from scratch and measure it, as the evaluator does for any trial."""
    budget = Budget(epochs=search.spec.epochs)
    for arch in finalists:
        trial = store.start_trial(name, arch.to_json(), arch.key)
        executor.submit(trial.id, search.evaluator, arch, budget)
    while executor.pending():
        trial_id, result = executor.next_result()
        record = store.finish_trial(trial_id, result)
        if on_trial is not None:
            on_trial(record)
