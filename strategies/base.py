"""Strategy: proposes architectures and learns from their results; runs no loop of its own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from archetype.errors import SpecError
from archetype.objectives import Constraint, Objective
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace

STATE_VERSION = 1


class Strategy(ABC):
    """The ask/tell contract: the caller evaluates what ``ask`` proposes and ``tell``s the result."""

    name: str = ""

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

    @abstractmethod
    def ask(self) -> Architecture:
        """The next architecture to evaluate."""

    @abstractmethod
    def tell(self, arch: Architecture, result: Result) -> None:
        """Record what evaluating ``arch`` measured."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state from which ``load_state_dict`` resumes the search exactly."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def _check_state(self, state: dict[str, Any]) -> None:
        if state.get("strategy") != self.name or state.get("version") != STATE_VERSION:
            raise SpecError(
                f"strategy state is for {state.get('strategy')!r} v{state.get('version')}, "
                f"not {self.name!r} v{STATE_VERSION}"
            )


S = TypeVar("S", bound=type[Strategy])
_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[S], S]:
    """Register a strategy class under ``name`` (used by ``--strategy``)."""

    def register(cls: S) -> S:
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return register


def list_strategies() -> list[str]:
    _load_builtin()
    return sorted(_STRATEGIES)


def make_strategy(
    name: str,
    space: SearchSpace,
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint] = (),
    seed: int = 0,
    **options: Any,
) -> Strategy:
    """Instantiate strategy ``name``; SpecError names an unknown strategy or option."""
    _load_builtin()
    cls = _STRATEGIES.get(name)
    if cls is None:
        raise SpecError(f"unknown strategy '{name}'; known: {', '.join(sorted(_STRATEGIES))}")
    try:
        return cls(space, objectives, constraints, seed, **options)
    except TypeError as exc:
        raise SpecError(f"strategy '{name}': {exc}") from None


def _load_builtin() -> None:
    from archetype.strategies import oneshot, random  # noqa: F401
