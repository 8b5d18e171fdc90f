"""Strategy: proposes architectures and learns from their results; runs no loop of its own."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from archetype.errors import SpecError
from archetype.objectives import Constraint, Objective
from archetype.registry import Registry
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.strategies.constraint_model import ConstraintModel, ValuePredictor

STATE_VERSION = 2
"""Version 2: the state holds the strategy's own small state; what was told is rebuilt from the stored trials."""
MAX_REDRAWS = 50
"""How many times a strategy redraws an architecture it has already proposed before proposing it again."""


@dataclass(frozen=True)
class StoredTrial:
    """A stored trial as a resumed strategy is rebuilt from it: ``number`` in ask order, no result while running."""

    number: int
    arch: Architecture
    result: Result | None


class Strategy(ABC):
    """The ask/tell contract: the caller evaluates what ``ask`` proposes and ``tell``s the result."""

    name: str = ""
    scoring: ClassVar[str] = "trained"
    """How the driver scores what ``ask`` proposes: ``trained`` by the study's evaluator, ``supernet`` on a supernet."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint] = (),
        seed: int = 0,
    ) -> None:
        self.space = space
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        self.seed = seed
        self._seen: set[str] = set()  # keys of every architecture asked or told
        self.constraint_model = ConstraintModel(space, self.constraints)  # strategies that learn the bounds tell it

    def use_predictor(self, name: str, predict: ValuePredictor) -> None:
        """A predictor of value ``name`` (the latency table's) that the strategy may trust before measuring."""
        self.constraint_model.use_predictor(name, predict)

    @abstractmethod
    def ask(self) -> Architecture:
        """The next architecture to evaluate."""

    @abstractmethod
    def tell(self, arch: Architecture, result: Result) -> None:
        """Record what evaluating ``arch`` measured."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The strategy's own small JSON-able state (random generators, counters), not what it was told."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, after ``restore`` has told the stored trials again."""

    def restore(self, state: Mapping[str, Any] | None, trials: Sequence[StoredTrial]) -> None:
        """Resume exactly: tell the stored trials again (in the order they were told), then load the saved state.

        Running trials are only marked as asked. Without a state (or one of an older version) the strategy
        learns from the trials and goes on from its seed.
        """
        for trial in trials:
            if trial.result is None:
                self._seen.add(trial.arch.key)
            else:
                self.tell(trial.arch, trial.result)
        if state is not None and state.get("version") == STATE_VERSION:
            self.load_state_dict(dict(state))

    def close(self) -> None:
        """Release what the strategy holds beyond its state (a thread, for NNI's); a no-op for most."""
        return None

    def _check_state(self, state: dict[str, Any]) -> None:
        if state.get("strategy") != self.name or state.get("version") != STATE_VERSION:
            raise SpecError(
                f"strategy state is for {state.get('strategy')!r} v{state.get('version')}, "
                f"not {self.name!r} v{STATE_VERSION}"
            )


def propose_unseen(propose: Callable[[], Architecture], seen: set[str]) -> Architecture:
    """``propose()`` until it gives an architecture not in ``seen`` (at most MAX_REDRAWS redraws); added to ``seen``."""
    arch = propose()
    for _ in range(MAX_REDRAWS):
        if arch.key not in seen:
            break
        arch = propose()
    seen.add(arch.key)
    return arch


S = TypeVar("S", bound=type[Strategy])


def _load_builtin() -> None:
    from archetype.strategies import (  # noqa: F401
        evolution,
        nni_adapter,
        oneshot,
        optuna_sampler,
        predictor_guided,
        random,
    )


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", load=_load_builtin)
"""Every strategy class by name (``--strategy``); the built-in ones are imported on the first look-up."""


def register_strategy(name: str) -> Callable[[S], S]:
    """Register a strategy class under ``name`` (used by ``--strategy``)."""
    return STRATEGIES.register_named(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def supernet_strategies() -> list[str]:
    """The strategies whose candidates the driver scores on a supernet rather than trains."""
    return [name for name, cls in STRATEGIES.items() if cls.scoring == "supernet"]


def make_strategy(
    name: str,
    space: SearchSpace,
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint] = (),
    seed: int = 0,
    **options: Any,
) -> Strategy:
    """Instantiate strategy ``name``; SpecError names an unknown strategy or option."""
    cls = STRATEGIES.get(name)
    known = strategy_options(name)
    for option in options:
        if option not in known:
            listed = ", ".join(known) if known else "none"
            raise SpecError(f"strategy '{name}': unknown option '{option}'; options: {listed}")
    return cls(space, objectives, constraints, seed, **options)


def strategy_options(name: str) -> dict[str, Any]:
    """The options strategy ``name`` takes, with their defaults."""
    options: dict[str, Any] = {}
    for klass in reversed(STRATEGIES.get(name).__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                options[param.name] = param.default
    return options


def check_option(
    strategy: str,
    name: str,
    value: Any,
    kind: type,
    minimum: float | None = None,
    choices: Sequence[str] = (),
) -> Any:
    """``value`` if it is a ``kind`` (above ``minimum``, among ``choices``); else SpecError naming the option."""
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    what = {int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
    if minimum is not None:
        what = f"{what} >= {minimum:g}"
        ok = ok and value >= minimum
    if choices:
        what = f"one of {', '.join(choices)}"
        ok = ok and value in choices
    if not ok:
        raise SpecError(f"strategy '{strategy}': option '{name}' must be {what}, got {value!r}")
    return value

