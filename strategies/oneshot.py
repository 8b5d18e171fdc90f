"""One-shot evolution: regularized evolution on supernet scores (inherited weights) under the constraints.

The caller scores each asked architecture on a trained supernet and tells the result with the value
``supernet_accuracy`` (or ``accuracy``) and the constrained values (a predicted ``latency_ms``).
A candidate breaking a constraint never becomes a parent.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from archetype.errors import SpecError
from archetype.objectives import within_budget
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.strategies.base import STATE_VERSION, Strategy, check_option, propose_unseen, register_strategy

SCORE_NAMES = ("supernet_accuracy", "accuracy")


@register_strategy("oneshot")
class OneShotEvolution(Strategy):
    """Random architectures until ``population`` are told, then mutants of tournament winners; the oldest dies."""

    def __init__(self, *args: Any, population: int = 16, tournament: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        population = check_option(self.name, "population", population, int, minimum=2)
        tournament = check_option(self.name, "tournament", tournament, int, minimum=1)
        if tournament > population:
            raise SpecError(f"strategy '{self.name}': option 'tournament' must be at most population, got {tournament}")
        self.population_size, self.tournament = population, tournament
        self._rng = np.random.default_rng(self.seed)
        self._population: deque[tuple[dict[str, Any], float]] = deque(maxlen=population)  # (arch JSON, fitness)

    def ask(self) -> Architecture:
        return propose_unseen(self._propose, self._seen)

    def _propose(self) -> Architecture:
        parents = [p for p in self._population if np.isfinite(p[1])]
        if len(self._population) < self.population_size or not parents:
            return self.space.sample(self._rng)
        picks = self._rng.choice(len(parents), size=min(self.tournament, len(parents)), replace=False)
        parent = self.space.architecture_from_json(max((parents[i] for i in picks), key=lambda p: p[1])[0])
        mutants = list(self.space.neighbours(parent))
        return mutants[int(self._rng.integers(len(mutants)))] if mutants else self.space.sample(self._rng)

    def tell(self, arch: Architecture, result: Result) -> None:
        self._seen.add(arch.key)
        self._population.append((arch.to_json(), self.fitness(result)))

    def fitness(self, result: Result) -> float:
        """The score of a feasible complete result; -inf for a failed one or one that breaks a constraint."""
        score = next((result.values[n] for n in SCORE_NAMES if n in result.values), None)
        if result.state.value != "complete" or score is None:
            return float("-inf")
        if not within_budget(result.values, self.constraints):
            return float("-inf")
        return float(score)

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self._rng.bit_generator.state = state["rng"]
