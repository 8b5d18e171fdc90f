"""One-shot scoring: candidates scored on a trained supernet inside the study's one trial loop, the best retrained.

1. The supernet (or a balanced mixture of ``spec.supernets``) is trained in one Ray task (in-process
   when the caller gives a non-Ray executor).
2. The trial loop asks the strategy for candidates; ``SupernetEvaluator`` scores each by validation
   accuracy with inherited weights (batch norm recalibrated) and by a latency callable, so it is stored
   as a complete trial whose values say ``supernet_accuracy`` (never ``accuracy``, so it stays off the
   measured front).
3. The ``spec.finalists`` best scored candidates within the constraints are trained from scratch and
   measured by the study's evaluator through the same loop, with its retries, so the front holds
   measured figures only.

A resumed study trains its supernet again from the same seed, rebuilds the strategy from the scored
trials and goes on where it stopped: scoring, or the finalists not yet trained.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archetype.objectives import within_budget
from archetype.result import Result, TrialState
from archetype.runtime.data import load_dataset
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.spec import RunSpec
from archetype.store import TrialRecord
from archetype.trial_loop import TrialLoop
from archetype.worker.evaluator import Budget, EpochReport, Evaluator
from archetype.worker.executor import Executor, InlineExecutor, RayExecutor, RayRuntime, TrialLimits
from archetype.worker.supernet_training import SupernetConfig, SupernetTrainer, train_on_ray

LatencyFn = Callable[[Architecture], float]
"""Predicted (or measured) latency of an architecture in ms."""
SCORE_TIMING = "supernet_score_s"
"""The timing every supernet-scored trial carries, and no trained one: how a scored trial is told apart."""


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


@dataclass(frozen=True)
class TableLatency:
    """A latency table's prediction, measured instead where the table lacks one of the operators."""

    predict: Callable[[Architecture], float | None]
    fallback: LatencyFn

    def __call__(self, arch: Architecture) -> float:
        predicted = self.predict(arch)
        return self.fallback(arch) if predicted is None else predicted


class SupernetEvaluator(Evaluator):
    """Scores a candidate with the trained supernet's inherited weights and ``latency``; never trains."""

    runs_inline = True

    def __init__(self, trainer: SupernetTrainer, latency: LatencyFn, target: str) -> None:
        self.trainer, self.latency, self.target = trainer, latency, target

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch: EpochReport | None = None) -> Result:
        start = time.perf_counter()
        try:
            accuracy = self.trainer.score(arch)
            scored = time.perf_counter()
            latency_ms = float(self.latency(arch))
        except Exception as exc:  # an evaluator never raises: the candidate is stored as failed
            return Result.failed(f"scoring on the supernet failed: {exc}", target=self.target,
                                 timings={SCORE_TIMING: time.perf_counter() - start})
        values = {"supernet_accuracy": accuracy, "latency_ms": latency_ms, "params": float(arch.params()),
                  "macs": float(arch.macs())}
        timings = {SCORE_TIMING: scored - start, "latency_s": time.perf_counter() - scored,
                   "total_s": time.perf_counter() - start}
        return Result(TrialState.COMPLETE, values=values, timings=timings, target=self.target)


def is_scored(trial: TrialRecord, scored_keys: set[str]) -> bool:
    """A trial of the scoring phase: scored, or left running by a driver before its architecture was scored."""
    if trial.state is TrialState.RUNNING:
        return trial.arch_key not in scored_keys
    return SCORE_TIMING in trial.timings


@dataclass
class SupernetScoring:
    """One-shot search as a way of scoring: supernet training, scoring in the trial loop, then finalists."""

    spec: RunSpec
    space: SearchSpace
    trial_limits: TrialLimits
    latency: LatencyFn | None = None  # default: a latency table's prediction where one covers the space, else measured

    def config(self) -> SupernetConfig:
        """The supernet training settings the run spec implies."""
        spec = self.spec
        return SupernetConfig(epochs=spec.supernet_epochs or 4 * spec.epochs, seed=spec.seed,
                              threads=max(1, int(spec.trial_cpus())), device=spec.device, supernets=spec.supernets)

    def candidates(self, trials: Sequence[TrialRecord]) -> Callable[[TrialRecord], bool]:
        """The predicate a resumed loop uses to pick the scoring phase's trials out of ``trials``."""
        scored = {t.arch_key for t in trials if SCORE_TIMING in t.timings}
        return lambda trial: is_scored(trial, scored)

    def run(
        self,
        loop: TrialLoop,
        executor: Executor | None,
        evaluator: Evaluator,
        predict: Callable[[Architecture], float | None] | None = None,
    ) -> None:
        """Train the supernet, score candidates through ``loop``, then train the finalists on ``executor``."""
        spec = self.spec
        trainer = SupernetTrainer(self.space, load_dataset(spec.data, spec.seed), self.config())
        owns_executor = executor is None
        runtime = None
        try:
            if executor is not None and not isinstance(executor, RayExecutor):
                trainer.train()  # the caller runs evaluations in-process: train here too
            else:
                # one runtime for the training task and then the workers; each holds its CPUs only while it runs
                runtime = RayRuntime(spec.workers, spec.trial_cpus(), spec.ray_address)
                trainer.load_state_dict(train_on_ray(self.space, spec.data, self.config(),
                                                     ray_address=spec.ray_address, cpus=spec.trial_cpus(),
                                                     gpus=spec.trial_gpus()))
                executor = executor or RayExecutor(spec.workers, spec.trial_cpus(), spec.ray_address,
                                                   limits=self.trial_limits, gpus_per_trial=spec.trial_gpus())
            latency = self.latency or MeasuredLatency(spec.target, threads=1)
            if self.latency is None and predict is not None:  # a latency table covers the space: predict from it
                latency = TableLatency(predict, latency)
            loop.run(InlineExecutor(), SupernetEvaluator(trainer, latency, spec.target))
            self._train_finalists(loop, executor, evaluator)
        finally:
            if owns_executor and executor is not None:
                executor.shutdown()
            if runtime is not None:
                runtime.stop()

    def _train_finalists(self, loop: TrialLoop, executor: Executor, evaluator: Evaluator) -> None:
        """Train the best scored candidates within the constraints not trained yet, and those a driver left running."""
        trials = loop.store.trials(loop.study)
        scored = {t.arch_key for t in trials if SCORE_TIMING in t.timings}
        trained = [t for t in trials if not is_scored(t, scored)]
        running = [(t.id, self.space.architecture_from_json(t.arch)) for t in trained if t.state is TrialState.RUNNING]
        done = {t.arch_key for t in trained}
        finalists = [a for a in finalists_of(trials, self.spec, self.space) if a.key not in done]
        loop.run_fixed(executor, evaluator, finalists, requeued=running)


def finalists_of(trials: Sequence[TrialRecord], spec: RunSpec, space: SearchSpace) -> list[Architecture]:
    """The ``spec.finalists`` best distinct scored architectures within the constraints, best first."""
    best: dict[str, tuple[float, TrialRecord]] = {}
    for trial in trials:
        score = trial.values.get("supernet_accuracy")
        if SCORE_TIMING not in trial.timings or score is None or not within_budget(trial.values, spec.constraints):
            continue
        if trial.arch_key not in best or score > best[trial.arch_key][0]:
            best[trial.arch_key] = (score, trial)
    ranked = sorted(best.values(), key=lambda item: -item[0])[:spec.finalists]
    return [space.architecture_from_json(t.arch) for _, t in ranked]
