"""NNI's multi-trial strategies (regularized evolution, TPE, policy-based RL) behind ask/tell.

nni 3.0 is the optional extra ``nni``, kept out of the core install (it pins an
old filelock; ``make setup-nni`` builds its own environment ``.venv-nni``).

The space reaches NNI as one categorical per slot (the operator) and one per
operator hyperparameter; a sample that does not type-check is refused as
invalid. NNI optimises one number: the first objective (negated if minimised),
minus ``penalty * (1 + relative violation)`` when a constraint is broken. An
architecture told before is answered from what was told, without an ask (up
to ``MAX_REDRAWS`` times in a row).

TPE is NNI's tuner, asked and told directly. Evolution and RL are NNI
strategies that run their own loop and push models to an execution engine:
that loop runs in a thread on NNI's sequential engine, and each model it
executes is handed out by ``ask`` and waits until ``tell`` brings its result
back. The engine runs one model at a time, so an ``ask`` while another is out
gets a random unseen architecture, whose result NNI sees if it proposes it.

Every answer NNI got is kept in order, so ``load_state_dict`` replays a search:
a fresh NNI strategy with the same seed proposes what it proposed before and
gets the same answers until it departs from them.
"""

from __future__ import annotations

import atexit
import logging
import math
import queue
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from archetype.errors import ArchetypeError, SpecError, TypeCheckError
from archetype.objectives import Direction
from archetype.result import Result, TrialState
from archetype.searchspace.architecture import Architecture, Choice
from archetype.strategies.base import (
    MAX_REDRAWS,
    STATE_VERSION,
    StoredTrial,
    Strategy,
    check_option,
    propose_unseen,
    register_strategy,
)

PROPOSAL_TIMEOUT_S = 120.0
"""How long ``ask`` waits for the NNI thread to propose (NNI's own sampling, never an evaluation)."""
MAX_INVALID = 1000
"""How many samples in a row that do not type-check TPE may draw before a random architecture is asked."""


def _import_nni() -> Any:
    try:
        import nni
        import nni.nas.strategy  # the strategies import what they need
    except ImportError as exc:
        raise SpecError(
            f"the nni-* strategies need nni 3.0: pip install 'archetype-nas[nni]' in an environment of its own, "
            f"or run 'make setup-nni' ({exc})"
        ) from None
    return nni


class NniStrategy(Strategy):
    """What the NNI strategies share: the categorical space, the one number NNI maximises, the answers."""

    def __init__(self, *args: Any, penalty: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalty = check_option(self.name, "penalty", penalty, float, minimum=0.0)
        _import_nni()
        logging.getLogger("nni").setLevel(logging.WARNING)  # NNI logs every model at INFO
        self._rng = np.random.default_rng(self.seed)
        self._rewards: dict[str, float] = {}  # arch key -> the number NNI was (or will be) given
        self._told: list[tuple[dict[str, Any], float]] = []
        self._answers: list[tuple[str, float]] = []  # (arch key, reward): every answer NNI got, in order
        self._replay: list[tuple[str, float]] = []  # answers of a resumed search, given again in order
        self._cached_in_row = 0

    @property
    def invalid_reward(self) -> float:
        """What NNI gets for a sample that does not type-check or an evaluation that failed."""
        return -2.0 * self.penalty

    def tell(self, arch: Architecture, result: Result) -> None:
        reward = self.reward(result)
        self._seen.add(arch.key)
        self._rewards[arch.key] = reward
        self._told.append((arch.to_json(), reward))
        self._deliver(arch, reward)

    def _deliver(self, arch: Architecture, reward: float) -> None:
        """Hand a told reward to NNI if it waits for it."""

    def reward(self, result: Result) -> float:
        """The one number NNI maximises for ``result``."""
        first = self.objectives[0]
        value = result.values.get(first.name)
        violation = 0.0
        for c in self.constraints:
            gap = c.violation(result.values)
            if gap is None:  # a missing constrained value is infeasible, never a free pass
                return self.invalid_reward
            violation += gap / (abs(c.bound) or 1.0)
        if violation > 0:
            return -self.penalty * (1.0 + violation)
        if value is None or result.state is TrialState.FAILED:
            return self.invalid_reward
        return float(value) if first.direction is Direction.MAXIMIZE else -float(value)

    def _known_answer(self, arch: Architecture) -> float | None:
        """The answer NNI gets for ``arch`` without an evaluation (replayed, or told before); None if it needs one."""
        position = len(self._answers)
        if position < len(self._replay) and self._replay[position][0] == arch.key:
            return self._replay[position][1]
        self._replay = []
        if arch.key in self._rewards and self._cached_in_row < MAX_REDRAWS:
            self._cached_in_row += 1
            return self._rewards[arch.key]
        self._cached_in_row = 0
        return None

    def _choices(self) -> dict[str, int]:
        """NNI label -> number of choices: each slot's operator, then each searched hyperparameter."""
        labels: dict[str, int] = {}
        for slot in self.space.slots:
            labels[slot.name] = len(slot.candidates)
            for cand in slot.candidates:
                for name, values in cand.domain:
                    if len(values) > 1:
                        labels[_label(slot.name, cand.op, name)] = len(values)
        return labels

    def _arch_of(self, sample: dict[str, Any]) -> Architecture | None:
        """The architecture a sample names, or None if it does not type-check."""
        choices = []
        for slot in self.space.slots:
            cand = slot.candidates[sample[slot.name]]
            params = {
                name: values[sample[_label(slot.name, cand.op, name)]] if len(values) > 1 else values[0]
                for name, values in cand.domain
            }
            choices.append(Choice.of(slot.name, cand.op, params))
        arch = self.space.architecture(tuple(choices))
        try:
            arch.typing()
        except TypeCheckError:
            return None
        return arch

    def _random_unseen(self) -> Architecture:
        return propose_unseen(lambda: self.space.sample(self._rng), self._seen)

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "told": [[arch, reward] for arch, reward in self._told],
            "answers": [[key, reward] for key, reward in self._answers],
            "rng": self._rng.bit_generator.state,
            "seed": self.seed,  # NNI's own generators restart from it, and the replay follows them
        }

    def restore(self, state: Mapping[str, Any] | None, trials: Sequence[StoredTrial]) -> None:
        """NNI's engines cannot be told a history: its saved answers are replayed; without them, the trials are told."""
        if state is None or state.get("version") != STATE_VERSION:
            super().restore(None, trials)
            return
        self.load_state_dict(dict(state))
        self._seen.update(t.arch.key for t in trials)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        if self._answers:
            raise ArchetypeError(f"strategy '{self.name}': load the state before the first ask")
        self._rng.bit_generator.state = state["rng"]
        self.seed = int(state["seed"])
        self._told = [(dict(arch), float(reward)) for arch, reward in state["told"]]
        self._replay = [(str(key), float(reward)) for key, reward in state["answers"]]
        for arch, reward in self._told:
            key = self.space.architecture_from_json(arch).key
            self._rewards[key] = reward
            self._seen.add(key)


@register_strategy("nni-tpe")
class NniTpe(NniStrategy):
    """NNI's TPE tuner on the categorical space, asked and told directly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tuner: Any = None
        self._next_id = 0
        self._pending: dict[str, tuple[int, dict[str, Any]]] = {}  # arch key -> (NNI parameter id, sample)

    def ask(self) -> Architecture:
        if self._tuner is None:
            from nni.algorithms.hpo.tpe_tuner import TpeTuner

            self._tuner = TpeTuner(optimize_mode="maximize", seed=self.seed)
            self._tuner.update_search_space({k: {"_type": "choice", "_value": list(range(n))}
                                             for k, n in self._choices().items()})
        for _ in range(MAX_INVALID):
            pid, self._next_id = self._next_id, self._next_id + 1
            sample = self._tuner.generate_parameters(pid)
            arch = self._arch_of(sample)
            reward = self.invalid_reward if arch is None else self._known_answer(arch)
            if reward is None and arch is not None:
                self._pending[arch.key] = (pid, sample)
                self._seen.add(arch.key)
                return arch
            self._tuner.receive_trial_result(pid, sample, reward)
            if arch is not None:
                self._answers.append((arch.key, reward))
        return self._random_unseen()

    def _deliver(self, arch: Architecture, reward: float) -> None:
        if arch.key in self._pending:
            pid, sample = self._pending.pop(arch.key)
            self._tuner.receive_trial_result(pid, sample, reward)
            self._answers.append((arch.key, reward))


class NniLoopStrategy(NniStrategy):
    """An NNI strategy that runs its own loop, in a thread, trading its models through ``ask``/``tell``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requests: queue.Queue[Architecture | None] = queue.Queue()
        self._replies: queue.Queue[float] = queue.Queue()
        self._waiting: Architecture | None = None  # what NNI waits on: handed out by ask, not yet told
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._closing = False

    def make_nni_strategy(self) -> Any:
        """The NNI strategy object this adapter runs."""
        raise NotImplementedError

    def ask(self) -> Architecture:
        if self._waiting is None:
            arch = self._next_from_nni()
            if arch is not None:
                self._waiting = arch
                self._seen.add(arch.key)
                return arch
        return self._random_unseen()

    def _deliver(self, arch: Architecture, reward: float) -> None:
        if self._waiting is not None and self._waiting.key == arch.key:
            self._waiting = None
            self._replies.put(reward)

    def close(self) -> None:
        """Stop NNI's loop and join its thread (done at exit for any still open)."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._closing = True
        nni_logger = logging.getLogger("nni")
        level = nni_logger.level
        nni_logger.setLevel(logging.CRITICAL + 1)  # NNI reports the interruption, loudly, maybe to closed streams
        self._replies.put(math.nan)  # wakes the thread if it waits for a reply
        self._thread.join(timeout=30)
        nni_logger.setLevel(level)

    def _next_from_nni(self) -> Architecture | None:
        """The next architecture NNI proposes, or None once its loop has ended."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_nni, name=f"archetype-{self.name}", daemon=True)
            _RUNNING.add(self)
            self._thread.start()
        elif not self._thread.is_alive() and self._requests.empty():
            return None
        try:
            arch = self._requests.get(timeout=PROPOSAL_TIMEOUT_S)
        except queue.Empty:
            waited = f"{PROPOSAL_TIMEOUT_S:.0f} s"
            raise ArchetypeError(f"strategy '{self.name}': NNI proposed nothing in {waited}") from None
        if arch is None and self._failure is not None:
            raise ArchetypeError(f"strategy '{self.name}': NNI failed: {self._failure!r}") from self._failure
        return arch

    def _run_nni(self) -> None:
        from nni.nas.execution import SequentialExecutionEngine

        try:
            space = _model_space_class()(self._mutables(), self._evaluate_sample, self._arch_of)
            strategy = self.make_nni_strategy()
            strategy(space, SequentialExecutionEngine(continue_on_failure=True))
        except BaseException as exc:  # surfaced by the next ask
            if not self._closing:
                self._failure = exc
        finally:
            self._requests.put(None)

    def _evaluate_sample(self, sample: dict[str, Any]) -> float:
        """Runs in the NNI thread: the reward of one sample NNI executes."""
        arch = self._arch_of(sample)
        if arch is None:
            return self.invalid_reward
        reward = self._known_answer(arch)
        if reward is None:
            self._requests.put(arch)
            reward = self._replies.get()
        if self._closing:
            raise KeyboardInterrupt  # the one exception NNI's engine and strategies let through to stop
        self._answers.append((arch.key, reward))
        return reward

    def _mutables(self) -> dict[str, Any]:
        from nni.mutable import Categorical

        return {label: Categorical(list(range(n)), label=label) for label, n in self._choices().items()}


@register_strategy("nni-evolution")
class NniRegularizedEvolution(NniLoopStrategy):
    """NNI's regularized (aging) evolution: tournament of ``sample_size`` from the last ``population``."""

    def __init__(self, *args: Any, population: int = 20, sample_size: int = 5, mutation_prob: float = 0.2,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population = check_option(self.name, "population", population, int, minimum=2)
        self.sample_size = check_option(self.name, "sample_size", sample_size, int, minimum=1)
        self.mutation_prob = check_option(self.name, "mutation_prob", mutation_prob, float, minimum=0.0)

    def make_nni_strategy(self) -> Any:
        from nni.nas.strategy import RegularizedEvolution

        return RegularizedEvolution(population_size=self.population, sample_size=self.sample_size,
                                    mutation_prob=self.mutation_prob, dedup=False, seed=self.seed)


@register_strategy("nni-rl")
class NniPolicyRL(NniLoopStrategy):
    """NNI's policy-based RL (PPO over the choices, as in NAS with reinforcement learning); needs tianshou."""

    def __init__(self, *args: Any, samples_per_update: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples_per_update = check_option(self.name, "samples_per_update", samples_per_update, int, minimum=1)

    def make_nni_strategy(self) -> Any:
        import torch
        from nni.nas.strategy import PolicyBasedRL

        # the policy's weights and its PPO updates draw from the global generators (torch, numpy)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        return PolicyBasedRL(samples_per_update=self.samples_per_update, reward_for_invalid=self.invalid_reward)


_RUNNING: weakref.WeakSet[NniLoopStrategy] = weakref.WeakSet()


@atexit.register
def _stop_running() -> None:
    """NNI threads still inside torch when the interpreter exits abort the process: stop them first."""
    for strategy in list(_RUNNING):
        strategy.close()


_SPACE_CLASS: list[type] = []


def _model_space_class() -> type:
    """An NNI executable model space whose models are samples and whose execution is a callback."""
    if _SPACE_CLASS:
        return _SPACE_CLASS[0]
    import nni
    from nni.mutable import MutableDict, SampleValidationError
    from nni.nas.space import ExecutableModelSpace, ModelStatus

    class SampleSpace(ExecutableModelSpace):
        """Samples of categoricals; executing one reports what ``evaluate`` returns for it."""

        def __init__(
            self,
            mutables: dict[str, Any] | Any,
            evaluate: Callable[[dict[str, Any]], float],
            architecture: Callable[[dict[str, Any]], Architecture | None],
        ) -> None:
            super().__init__()
            self.mutables = mutables if isinstance(mutables, MutableDict) else MutableDict(mutables)
            self.evaluate, self.architecture = evaluate, architecture
            self.evaluator = None
            self.sample: dict[str, Any] | None = None

        def freeze(self, sample: dict[str, Any]) -> SampleSpace:
            self.validate(sample)
            model = SampleSpace(self.mutables, self.evaluate, self.architecture)
            model.sample, model.status = dict(sample), ModelStatus.Frozen
            return model

        def check_contains(self, sample: dict[str, Any]) -> SampleValidationError | None:
            error = self.mutables.check_contains(sample)
            if error is None and self.architecture(sample) is None:
                return SampleValidationError("the sample does not type-check")
            return error

        def leaf_mutables(self, is_leaf: Callable[[Any], bool]) -> Any:
            yield from self.mutables.leaf_mutables(is_leaf)

        def execute(self) -> None:
            assert self.sample is not None
            nni.report_final_result(self.evaluate(self.sample))

        def executable_model(self) -> dict[str, Any] | None:
            return self.sample

    _SPACE_CLASS.append(SampleSpace)
    return SampleSpace


def _label(slot: str, op: str, hyperparameter: str) -> str:
    """The NNI label of one operator hyperparameter of one slot (NNI labels take no slash)."""
    return f"{slot}:{op}:{hyperparameter}"
