"""The search driver: asks the strategy, runs evaluations on an executor, stores every trial."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from archetype.errors import ArchetypeError, SpecError, StorageError
from archetype.latency_screen import LatencyScreen, open_latency_screen
from archetype.pareto import feasible_front
from archetype.result import Result, TrialState
from archetype.runtime.data import load_dataset
from archetype.runtime.devices import cuda_present, resolve_device
from archetype.runtime.targets import get_target
from archetype.runtime.training import recipe
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.searchspace.spaces import get_space
from archetype.spec import RunSpec
from archetype.store import Store, StudyExistsError, StudyRecord, TrialRecord
from archetype.strategies import StoredTrial, Strategy, make_strategy
from archetype.worker.evaluator import Budget, Evaluator, TrainingEvaluator
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
    """A finished study: all its trials and the feasible Pareto front among them."""

    study: StudyRecord
    trials: list[TrialRecord]
    front: list[TrialRecord]


@dataclass
class Search:
    """A validated search, ready to run: its data, space, strategy and evaluator are resolved."""

    spec: RunSpec
    space: SearchSpace
    strategy: Strategy
    evaluator: Evaluator
    latency: Callable[[Architecture], float] | None = None  # one-shot: predicted latency (default: measured)
    trial_limits: TrialLimits = field(default_factory=TrialLimits)  # one evaluation's time and memory on Ray

    def run(
        self,
        store: Store,
        *,
        executor: Executor | None = None,
        on_trial: Callable[[TrialRecord], None] | None = None,
        resume: bool = False,
    ) -> SearchReport:
        """Run the study to ``spec.trials`` evaluations, storing each trial the moment it ends.

        With ``resume`` the study ``spec.study`` is continued: its strategy state is
        restored, finished trials stay as they are, and trials that were running
        when the last driver stopped are evaluated again as their next attempt.
        """
        spec = self.spec
        if resume and spec.strategy == "oneshot":
            raise SpecError(
                f"study {spec.study!r} is a one-shot search, which cannot be resumed; start a new study"
            )
        screen = None if spec.benchmark is not None else open_latency_screen(
            store, self.space, spec.target, spec.latency_budget(), margin=spec.latency_margin,
            required=spec.predict_latency, seed=spec.seed)
        if screen is not None:  # the strategy learns the latency bound from the table's predictions too
            self.strategy.use_predictor("latency_ms", screen.predict)
        if resume:
            name, requeued, asked = self._reopen(store)
        else:
            name = self._create_study(store)
            requeued, asked = [], 0
        owns_executor = executor is None
        status = "failed"
        try:
            if spec.strategy == "oneshot":
                from archetype.oneshot import MeasuredLatency, TableLatency, run_oneshot

                latency = self.latency
                if latency is None and screen is not None:  # a latency table covers the space: predict from it
                    latency = TableLatency(screen.predict, MeasuredLatency(spec.target, threads=1))
                run_oneshot(self, store, name, executor, on_trial, latency)
            elif spec.scheduler == "asha" and executor is None:
                self._run_tune(store, name, requeued, spec.trials - asked, on_trial, screen)
            else:
                if executor is None:
                    executor = InlineExecutor() if self.evaluator.runs_inline else RayExecutor(
                        spec.workers, spec.trial_cpus(), spec.ray_address, limits=self.trial_limits,
                        gpus_per_trial=spec.trial_gpus())
                self._run_executor(store, name, executor, requeued, asked, on_trial, screen)
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            store.set_study_status(name, status)
            self.strategy.close()
            if owns_executor and executor is not None:
                executor.shutdown()
        trials = store.trials(name)
        return SearchReport(store.get_study(name), trials, feasible_front(trials, spec.objectives, spec.constraints))

    def _run_executor(
        self,
        store: Store,
        name: str,
        executor: Executor,
        requeued: list[TrialRecord],
        asked: int,
        on_trial: Callable[[TrialRecord], None] | None,
        screen: LatencyScreen | None = None,
    ) -> None:
        """The plain loop: ask, screen, submit, store and tell each result; lost workers are retried."""
        spec = self.spec
        budget = Budget(epochs=spec.epochs)
        for trial in requeued:
            record = store.requeue_trial(trial.id)
            arch = self.space.architecture_from_json(record.arch)
            executor.submit((record.id, arch, record.attempt), self.evaluator, arch, budget)
        while asked < spec.trials or executor.pending():
            while asked < spec.trials and executor.pending() < executor.slots:
                arch = self.strategy.ask()
                asked += 1
                pruned = screen.verdict(arch) if screen is not None else None
                if pruned is not None:
                    record = store.record_trial(name, arch.to_json(), arch.key, pruned)
                    self.strategy.tell(arch, record.result())
                    store.save_strategy_state(name, self.strategy.state_dict())
                    if on_trial is not None:
                        on_trial(record)
                    continue
                trial = store.start_trial(name, arch.to_json(), arch.key)
                executor.submit((trial.id, arch, trial.attempt), self.evaluator, arch, budget)
                store.save_strategy_state(name, self.strategy.state_dict())
            if not executor.pending():  # every candidate asked was pruned by its predicted latency
                continue
            (trial_id, arch, attempt), result = executor.next_result()
            result = _checked(result)
            if result.retryable and attempt <= spec.retries:
                record = store.requeue_trial(trial_id)
                executor.submit((trial_id, arch, record.attempt), self.evaluator, arch, budget)
                continue
            predicted = screen.predict(arch) if screen is not None else None
            if predicted is not None:
                result.values.setdefault("predicted_latency_ms", predicted)
            record = store.finish_trial(trial_id, result)
            self.strategy.tell(arch, record.result())
            store.save_strategy_state(name, self.strategy.state_dict())
            if on_trial is not None:
                on_trial(record)

    def _run_tune(
        self,
        store: Store,
        name: str,
        requeued: list[TrialRecord],
        to_ask: int,
        on_trial: Callable[[TrialRecord], None] | None,
        screen: LatencyScreen | None = None,
    ) -> None:
        """Trials through Ray Tune, the strategy as its searcher and ASHA stopping weak ones early."""
        from archetype.tune import AshaSettings, TuneRun, run_with_tune

        spec = self.spec
        again = deque()
        for trial in requeued:
            record = store.requeue_trial(trial.id)
            again.append((record.id, self.space.architecture_from_json(record.arch)))
        run = TuneRun(name, store, self.strategy, to_ask, again, on_trial, screen)
        run_with_tune(run, self.evaluator, epochs=spec.epochs, workers=spec.workers,
                      cpus_per_trial=spec.trial_cpus(), gpus_per_trial=spec.trial_gpus(), retries=spec.retries,
                      asha=AshaSettings(),
                      ray_address=spec.ray_address)

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

    def _reopen(self, store: Store) -> tuple[str, list[TrialRecord], int]:
        """The study to resume, its trials to run again, and how many trials it already has."""
        name = self.spec.study
        if name is None:
            raise SpecError("resuming needs the study's name")
        trials = store.trials(name)
        running = [t for t in trials if t.state is TrialState.RUNNING]
        if len(trials) >= self.spec.trials and not running:
            raise SpecError(
                f"study {name!r} already has its {len(trials)} trials; give a larger number of trials to extend it"
            )
        self.strategy.restore(store.strategy_state(name), stored_trials(self.space, trials))
        store.set_study_status(name, "running")
        return name, running, len(trials)


def stored_trials(space: SearchSpace, trials: Sequence[TrialRecord]) -> list[StoredTrial]:
    """The trials a resumed strategy is rebuilt from, in the order they were told; running ones last."""
    finished = sorted((t for t in trials if t.finished_at is not None), key=lambda t: (t.finished_at, t.number))
    running = [t for t in trials if t.finished_at is None]
    return [
        StoredTrial(t.number, space.architecture_from_json(t.arch), None if t.finished_at is None else t.result())
        for t in [*finished, *running]
    ]


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
    return Search(spec, space, strategy, evaluator, trial_limits=trial_limits)


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
    executor: Executor | None = None,
    evaluator: Evaluator | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> SearchReport:
    """Continue a stored study (after its driver stopped) up to its trials, or to ``trials`` if given."""
    spec = stored_spec(store, study, trials)
    return prepare_search(spec, evaluator).run(store, executor=executor, on_trial=on_trial, resume=True)


def stored_spec(store: Store, study: str, trials: int | None = None) -> RunSpec:
    """The run spec a study was launched with (its number of trials replaced by ``trials`` if given)."""
    fields = {**store.get_study(study).spec, "study": study}
    fields.setdefault("recipe", "plain")  # studies stored before recipes existed trained with the plain schedule
    if trials is not None:
        fields["trials"] = trials
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


def _checked(result: Result) -> Result:
    if not isinstance(result, Result):
        raise ArchetypeError(f"an evaluator returned {type(result).__name__}, not a Result")
    return result
