"""The search driver: asks the strategy, runs evaluations on an executor, stores every trial."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archetype.errors import SpecError, StorageError
from archetype.latency_screen import open_latency_screen
from archetype.oneshot import SupernetScoring
from archetype.pareto import feasible_front
from archetype.runtime.data import load_dataset
from archetype.runtime.devices import cuda_present, resolve_device
from archetype.runtime.targets import get_target
from archetype.runtime.training import recipe
from archetype.searchspace.space import SearchSpace
from archetype.searchspace.spaces import get_space
from archetype.spec import SCHEDULERS, RunSpec
from archetype.store import Store, StudyExistsError, StudyRecord, TrialRecord
from archetype.strategies import Strategy, make_strategy
from archetype.trial_loop import TrialLoop
from archetype.worker.evaluator import Evaluator, TrainingEvaluator
from archetype.worker.executor import (
    Executor,
    InlineExecutor,
    RayExecutor,
    TrialLimits,
    default_trial_memory_mb,
    default_trial_timeout_s,
)

_NAME_TRIES = 20  # searches started at once on one store may pick the same free study name


@dataclass(frozen=True)
class SearchReport:
    """A finished study: all its trials, the feasible Pareto front among them, and what the loop did."""

    study: StudyRecord
    trials: list[TrialRecord]
    front: list[TrialRecord]
    loop: dict[str, Any] = field(default_factory=dict)  # TrialLoop.summary(): evaluated, screened, why it stopped


@dataclass
class Search:
    """A validated search, ready to run: its data, space, strategy and evaluator are resolved."""

    spec: RunSpec
    space: SearchSpace
    strategy: Strategy
    evaluator: Evaluator
    trial_limits: TrialLimits = field(default_factory=TrialLimits)  # one evaluation's time and memory on Ray
    scoring: SupernetScoring | None = None  # candidates scored on a supernet (a one-shot strategy), else evaluated

    def run(
        self,
        store: Store,
        *,
        executor: Executor | None = None,
        on_trial: Callable[[TrialRecord], None] | None = None,
        resume: bool = False,
    ) -> SearchReport:
        """Run the study to ``spec.trials`` evaluated candidates (or its time budget), storing each trial as it ends.

        With ``resume`` the study ``spec.study`` is continued: its strategy is rebuilt from the stored
        trials and its saved state, finished trials stay as they are, and trials that were running when
        the last driver stopped are evaluated again as their next attempt.
        """
        spec = self.spec
        screen = None if spec.benchmark is not None else open_latency_screen(
            store, self.space, spec.target, spec.latency_budget(), margin=spec.latency_margin,
            required=spec.predict_latency, seed=spec.seed)
        if screen is not None:  # the strategy learns the latency bound from the table's predictions too
            self.strategy.use_predictor("latency_ms", screen.predict)
        name = self._reopen(store) if resume else self._create_study(store)
        loop = TrialLoop(store, name, self.strategy, trials=spec.trials, epochs=spec.epochs, retries=spec.retries,
                         screen=None if self.scoring is not None else screen, on_trial=on_trial,
                         time_budget_s=spec.time_budget_s)
        if resume:
            candidate = self.scoring.candidates(store.trials(name)) if self.scoring is not None else None
            loop.resume(self.space, **({"candidate": candidate} if candidate is not None else {}))
            if self.scoring is None:
                loop.check_resumable()
            store.set_study_status(name, "running")
        owns_executor = executor is None
        status = "failed"
        try:
            if self.scoring is not None:
                self.scoring.run(loop, executor, self.evaluator, screen.predict if screen is not None else None)
            elif spec.scheduler is not None and executor is None:
                from archetype.tune import run_with_tune

                run_with_tune(loop, self.evaluator, workers=spec.workers, cpus_per_trial=spec.trial_cpus(),
                              gpus_per_trial=spec.trial_gpus(), asha=SCHEDULERS.get(spec.scheduler)(),
                              ray_address=spec.ray_address)
            else:
                if executor is None:
                    executor = InlineExecutor() if self.evaluator.runs_inline else RayExecutor(
                        spec.workers, spec.trial_cpus(), spec.ray_address, limits=self.trial_limits,
                        gpus_per_trial=spec.trial_gpus())
                loop.run(executor, self.evaluator)
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            loop.save()
            store.set_study_status(name, status)
            self.strategy.close()
            if owns_executor and executor is not None:
                executor.shutdown()
        trials = store.trials(name)
        return SearchReport(store.get_study(name), trials, feasible_front(trials, spec.objectives, spec.constraints),
                            loop.summary())

    def _create_study(self, store: Store) -> str:
        """Store the study; its name. An unnamed one takes the next free ``<space>-<n>`` if a concurrent search won."""
        spec = self.spec
        for _ in range(_NAME_TRIES):
            name = spec.study or store.next_study_name(self.space.name)
            try:
                store.create_study(
                    name,
                    space=self.space.name,
                    target=spec.target,
                    objectives=spec.objectives,
                    constraints=spec.constraints,
                    spec={**spec.to_json(), "study": name},
                )
            except StudyExistsError:
                if spec.study is not None:
                    raise
                continue
            return name
        raise StorageError(f"no free study name {self.space.name}-<n> after {_NAME_TRIES} tries; give --study")

    def _reopen(self, store: Store) -> str:
        """The name of the study to resume (StorageError names a missing one)."""
        name = self.spec.study
        if name is None:
            raise SpecError("resuming needs the study's name")
        store.get_study(name)
        return name


def prepare_search(spec: RunSpec, evaluator: Evaluator | None = None) -> Search:
    """Resolve the data, space, strategy and evaluator of ``spec``; bad input fails here, before anything is stored."""
    if spec.benchmark is not None:
        return _prepare_benchmark_search(spec, evaluator)
    dataset = load_dataset(spec.data, spec.seed)
    space = get_space(spec.space, dataset.input_type, dataset.num_classes)
    if spec.precision:
        space = space.with_precision(spec.precision)
    spec.limits().check_space(space)  # an absurd width fails here, before anything is built or stored
    get_target(spec.target)  # an unknown target, or one this machine lacks, fails here
    resolve_device(spec.device, "--device")  # cuda on a machine without CUDA fails here, before anything is stored
    if spec.trial_gpus() > 0 and spec.ray_address is None and not cuda_present():
        raise SpecError(f"--gpus-per-trial {spec.trial_gpus():g}: this machine has no CUDA device to share")
    strategy = make_strategy(
        spec.strategy, space, spec.objectives, spec.constraints, spec.seed, **spec.strategy_options
    )
    evaluator = evaluator or TrainingEvaluator(
        dataset=spec.data,
        target=spec.target,
        constraints=spec.constraints,
        seed=spec.seed,
        train=recipe(spec.recipe, epochs=spec.epochs, seed=spec.seed, threads=max(1, int(spec.trial_cpus())),
                     device=spec.device),
        limits=spec.limits(),
    )
    trial_limits = TrialLimits(
        spec.trial_timeout_s or default_trial_timeout_s(spec.epochs, len(dataset.train)),
        spec.trial_memory_mb or default_trial_memory_mb(spec.workers),
    )
    scoring = SupernetScoring(spec, space, trial_limits) if strategy.scoring == "supernet" else None
    return Search(spec, space, strategy, evaluator, trial_limits=trial_limits, scoring=scoring)


def _prepare_benchmark_search(spec: RunSpec, evaluator: Evaluator | None) -> Search:
    """A search answered by a published table: the space is fitted to the table's data set, nothing is trained."""
    from archetype.worker.tabular import PublishedTableEvaluator, published_input

    input_type, classes = published_input(spec.metric or "")
    space = get_space(spec.space, input_type, classes)
    evaluator = evaluator or PublishedTableEvaluator.open(spec.benchmark or "", space, spec.metric or "",
                                                          spec.latency_column)
    strategy = make_strategy(
        spec.strategy, space, spec.objectives, spec.constraints, spec.seed, **spec.strategy_options
    )
    return Search(spec, space, strategy, evaluator)


def resume_search(
    store: Store,
    study: str,
    *,
    trials: int | None = None,
    time_budget: Any = None,
    executor: Executor | None = None,
    evaluator: Evaluator | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> SearchReport:
    """Continue a stored study (after its driver stopped) up to its trials and time, or ``trials``/``time_budget``."""
    spec = stored_spec(store, study, trials, time_budget)
    return prepare_search(spec, evaluator).run(store, executor=executor, on_trial=on_trial, resume=True)


def stored_spec(store: Store, study: str, trials: int | None = None, time_budget: Any = None) -> RunSpec:
    """The run spec a study was launched with; ``trials`` and ``time_budget`` (its whole time) replace its own."""
    fields = {**store.get_study(study).spec, "study": study}
    fields.setdefault("recipe", "plain")  # studies stored before recipes existed trained with the plain schedule
    if trials is not None:
        fields["trials"] = trials
    if time_budget is not None:
        fields.pop("time_budget", None)
        fields["time_budget_s"] = time_budget
    return RunSpec.from_mapping(fields, where=f"the run spec stored with study {study!r}")


def run_search(
    spec: RunSpec,
    store: Store,
    *,
    executor: Executor | None = None,
    evaluator: Evaluator | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> SearchReport:
    """Validate ``spec`` and run it: the one call of the Python API."""
    return prepare_search(spec, evaluator).run(store, executor=executor, on_trial=on_trial)
