"""TrialLoop: the one loop of every study: ask, screen, start, evaluate, finish, tell, save.

The plain executor path, Ray Tune with ASHA and one-shot search all run their candidates
through it; they differ only in who evaluates (an evaluator on an executor, Tune's trials,
a supernet scorer). ``--trials`` counts evaluated candidates. Candidates the latency screen
sets aside before any training are stored with no attempt (``is_screened``), counted apart
and capped at ``SCREEN_CAP`` times the trials, so a hopeless budget still ends. A time budget
bounds the wall-clock time of the study over all its drivers: once it is spent nothing new
starts, the running trials finish and are stored, and a resume gets what is left.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from archetype.errors import ArchetypeError, SpecError
from archetype.latency_screen import LatencyScreen
from archetype.result import Result, TrialState
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.store import Store, TrialRecord
from archetype.strategies import StoredTrial, Strategy
from archetype.worker.evaluator import Budget, Evaluator
from archetype.worker.executor import Executor

SCREEN_CAP = 20
"""Candidates screened out per trial asked for, at most, before a search gives up on its budget."""
LOOP_STATE = "loop"
"""The key of the loop's own state (time spent) beside the strategy's in the stored state."""

TrialHook = Callable[[TrialRecord], None]


def is_screened(trial: TrialRecord) -> bool:
    """A trial the latency screen set aside before training: stored finished, with no attempt."""
    return trial.attempt == 0


class StopReason(enum.StrEnum):
    """Why the loop stopped starting candidates."""

    TRIALS = "trials"
    TIME = "time budget"
    SCREENED = "screened cap"


@dataclass
class Tally:
    """How many candidates the study has evaluated, screened out, and has running."""

    evaluated: int = 0
    screened: int = 0
    running: int = 0


def stored_trials(space: SearchSpace, trials: Sequence[TrialRecord]) -> list[StoredTrial]:
    """The trials a resumed strategy is rebuilt from, in the order they were told; running ones last."""
    finished = sorted((t for t in trials if t.finished_at is not None), key=lambda t: (t.finished_at, t.number))
    running = [t for t in trials if t.finished_at is None]
    return [
        StoredTrial(t.number, space.architecture_from_json(t.arch), None if t.finished_at is None else t.result())
        for t in [*finished, *running]
    ]


class TrialLoop:
    """One study's candidates from the strategy to the store, with retries, resume and the study's budgets."""

    def __init__(
        self,
        store: Store,
        study: str,
        strategy: Strategy,
        *,
        trials: int,
        epochs: int,
        retries: int = 0,
        screen: LatencyScreen | None = None,
        on_trial: TrialHook | None = None,
        time_budget_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.study, self.strategy = store, study, strategy
        self.trials, self.retries, self.screen, self.on_trial = trials, retries, screen, on_trial
        self.budget = Budget(epochs=epochs)
        self.time_budget_s = time_budget_s
        self.tally = Tally()
        self.requeued: deque[tuple[int, Architecture]] = deque()
        self._clock = clock
        self._started = clock()
        self._spent_before = 0.0
        self._timed_out = False

    # resume

    def resume(self, space: SearchSpace, *, candidate: Callable[[TrialRecord], bool] = lambda t: True) -> None:
        """Rebuild the strategy from the stored ``candidate`` trials, count them, and queue the running ones again."""
        trials = [t for t in self.store.trials(self.study) if candidate(t)]
        state = self.store.strategy_state(self.study)
        loop = state.pop(LOOP_STATE, None) if state is not None else None
        self._spent_before = float((loop or {}).get("elapsed_s", 0.0))
        self.strategy.restore(state, stored_trials(space, trials))
        self.count(trials)
        self.requeued.extend(
            (t.id, space.architecture_from_json(t.arch)) for t in trials if t.state is TrialState.RUNNING
        )

    def count(self, trials: Iterable[TrialRecord]) -> None:
        """Add stored finished trials to the tally."""
        for trial in trials:
            if is_screened(trial):
                self.tally.screened += 1
            elif trial.state is not TrialState.RUNNING:
                self.tally.evaluated += 1

    def check_resumable(self) -> None:
        """SpecError when a resume would have nothing to do."""
        if self.requeued:
            return
        if self.tally.evaluated >= self.trials:
            raise SpecError(f"study {self.study!r} already has its {self.tally.evaluated} trials; "
                            "give a larger number of trials to extend it")
        if self.time_left_s() == 0.0:
            raise SpecError(f"study {self.study!r} has spent its time budget of {self.time_budget_s:g} s; "
                            "give a larger --time-budget to extend it")

    # budgets

    def elapsed_s(self) -> float:
        """Wall-clock seconds the study's drivers have spent, this one included."""
        return self._spent_before + self._clock() - self._started

    def time_left_s(self) -> float | None:
        """Seconds left of the time budget (0 once spent); None without one."""
        if self.time_budget_s is None:
            return None
        return max(0.0, self.time_budget_s - self.elapsed_s())

    @property
    def screen_cap(self) -> int:
        return SCREEN_CAP * self.trials

    def may_start(self) -> bool:
        """Whether another candidate may be asked for: trials, screened cap and time all left."""
        if self.time_left_s() == 0.0:
            self._timed_out = True
            return False
        return self.tally.evaluated + self.tally.running < self.trials and self.tally.screened < self.screen_cap

    def stop_reason(self) -> StopReason:
        """Why no more candidates were started."""
        if self._timed_out:
            return StopReason.TIME
        if self.tally.evaluated < self.trials and self.tally.screened >= self.screen_cap:
            return StopReason.SCREENED
        return StopReason.TRIALS

    # the steps

    def propose(self) -> tuple[int, Architecture, int] | None:
        """The next candidate to evaluate as (trial id, arch, attempt), stored running; None once the budget is spent.

        Trials left running by an earlier driver come first. Candidates the screen sets aside are stored,
        told and counted on the way.
        """
        if self.requeued:
            trial_id, arch = self.requeued.popleft()
            record = self.store.requeue_trial(trial_id)
            self.tally.running += 1
            return trial_id, arch, record.attempt
        while self.may_start():
            arch = self.strategy.ask()
            verdict = self.screen.verdict(arch) if self.screen is not None else None
            if verdict is not None:
                self.tally.screened += 1
                self._told(self.store.record_trial(self.study, arch.to_json(), arch.key, verdict, attempt=0), arch)
                continue
            record = self.store.start_trial(self.study, arch.to_json(), arch.key)
            self.tally.running += 1
            self.save()
            return record.id, arch, record.attempt
        return None

    def finish(self, trial_id: int, arch: Architecture, result: Result, *, tell: bool = True) -> TrialRecord:
        """Store a candidate's outcome, tell the strategy (unless ``tell`` is False) and save its state."""
        result = _checked(result)
        predicted = self.screen.predict(arch) if self.screen is not None else None
        if predicted is not None:
            result.values.setdefault("predicted_latency_ms", predicted)
        record = self.store.finish_trial(trial_id, result)
        self.tally.running -= 1
        self.tally.evaluated += 1
        if tell:
            self._told(record, arch)
        elif self.on_trial is not None:
            self.on_trial(record)
        return record

    def save(self) -> None:
        """Store the strategy's state with the time the study has spent."""
        self.store.save_strategy_state(
            self.study, {**self.strategy.state_dict(), LOOP_STATE: {"elapsed_s": self.elapsed_s()}}
        )

    def _told(self, record: TrialRecord, arch: Architecture) -> None:
        self.strategy.tell(arch, record.result())
        self.save()
        if self.on_trial is not None:
            self.on_trial(record)

    # running on an executor

    def run(self, executor: Executor, evaluator: Evaluator) -> None:
        """Evaluate candidates on ``executor`` until the budget is spent; a lost worker's trial runs again."""
        while True:
            while executor.pending() < executor.slots and (candidate := self.propose()) is not None:
                executor.submit(candidate, evaluator, candidate[1], self.budget)
            if not executor.pending():
                return
            self._collect(executor, evaluator, tell=True)

    def run_fixed(
        self,
        executor: Executor,
        evaluator: Evaluator,
        archs: Sequence[Architecture],
        requeued: Sequence[tuple[int, Architecture]] = (),
    ) -> None:
        """Evaluate given architectures (not asked of the strategy, nor told to it) with the same retries and time.

        ``requeued`` are trials of this kind an earlier driver left running: they run again first.
        """
        for trial_id, arch in requeued:
            record = self.store.requeue_trial(trial_id)
            self.tally.running += 1
            executor.submit((trial_id, arch, record.attempt), evaluator, arch, self.budget)
        todo = deque(archs)
        while todo or executor.pending():
            while todo and executor.pending() < executor.slots and self.time_left_s() != 0.0:
                arch = todo.popleft()
                record = self.store.start_trial(self.study, arch.to_json(), arch.key)
                self.tally.running += 1
                executor.submit((record.id, arch, record.attempt), evaluator, arch, self.budget)
            if not executor.pending():
                self._timed_out = self._timed_out or bool(todo)
                return
            self._collect(executor, evaluator, tell=False)

    def _collect(self, executor: Executor, evaluator: Evaluator, *, tell: bool) -> None:
        (trial_id, arch, attempt), result = executor.next_result()
        result = _checked(result)
        if result.retryable and attempt <= self.retries:
            record = self.store.requeue_trial(trial_id)
            executor.submit((trial_id, arch, record.attempt), evaluator, arch, self.budget)
            return
        self.finish(trial_id, arch, result, tell=tell)

    def summary(self) -> dict[str, Any]:
        """What the loop did, for the CLI's last lines and ``--json``."""
        return {
            "evaluated": self.tally.evaluated, "screened": self.tally.screened, "screen_cap": self.screen_cap,
            "stopped_by": self.stop_reason().value, "elapsed_s": round(self.elapsed_s(), 3),
            "time_budget_s": self.time_budget_s,
        }


def _checked(result: Result) -> Result:
    if not isinstance(result, Result):
        raise ArchetypeError(f"an evaluator returned {type(result).__name__}, not a Result")
    return result
