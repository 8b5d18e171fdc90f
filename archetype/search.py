"""The search driver: asks the strategy, runs evaluations on an executor, stores every trial."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archetype.errors import ArchetypeError
from archetype.pareto import feasible_front
from archetype.result import Result
from archetype.searchspace.space import SearchSpace
from archetype.searchspace.spaces import get_space
from archetype.spec import RunSpec
from archetype.store import Store, StudyRecord, TrialRecord
from archetype.strategies import Strategy, make_strategy
from archetype.worker.data import load_dataset
from archetype.worker.evaluator import Budget, Evaluator, TrainingEvaluator
from archetype.worker.executor import Executor, RayExecutor
from archetype.worker.training import TrainConfig


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

    def run(
        self,
        store: Store,
        *,
        executor: Executor | None = None,
        on_trial: Callable[[TrialRecord], None] | None = None,
    ) -> SearchReport:
        """Run ``spec.trials`` evaluations, storing each trial the moment it ends."""
        spec = self.spec
        name = spec.study or store.next_study_name(self.space.name)
        store.create_study(
            name,
            space=self.space.name,
            target=spec.target,
            objectives=spec.objectives,
            constraints=spec.constraints,
            spec=spec.to_json(),
        )
        budget = Budget(epochs=spec.epochs)
        owns_executor = executor is None
        status = "failed"
        try:
            executor = executor or RayExecutor(spec.workers, spec.cpus_per_trial, spec.ray_address)
            asked = 0
            while asked < spec.trials or executor.pending():
                while asked < spec.trials and executor.pending() < executor.slots:
                    arch = self.strategy.ask()
                    trial = store.start_trial(name, arch.to_json(), arch.key)
                    executor.submit((trial.id, arch), self.evaluator, arch, budget)
                    asked += 1
                (trial_id, arch), result = executor.next_result()
                record = store.finish_trial(trial_id, _checked(result))
                self.strategy.tell(arch, record.result())
                if on_trial is not None:
                    on_trial(record)
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            store.set_study_status(name, status)
            if owns_executor and executor is not None:
                executor.shutdown()
        trials = store.trials(name)
        return SearchReport(store.get_study(name), trials, feasible_front(trials, spec.objectives, spec.constraints))


def prepare_search(spec: RunSpec, evaluator: Evaluator | None = None) -> Search:
    """Resolve the data, space, strategy and evaluator of ``spec``; bad input fails here, before anything is stored."""
    dataset = load_dataset(spec.data, spec.seed)
    space = get_space(spec.space, dataset.input_type, dataset.num_classes)
    strategy = make_strategy(
        spec.strategy, space, spec.objectives, spec.constraints, spec.seed, **spec.strategy_options
    )
    evaluator = evaluator or TrainingEvaluator(
        dataset=spec.data,
        target=spec.target,
        constraints=spec.constraints,
        seed=spec.seed,
        train=TrainConfig(epochs=spec.epochs, seed=spec.seed, threads=max(1, int(spec.cpus_per_trial))),
    )
    return Search(spec, space, strategy, evaluator)


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
