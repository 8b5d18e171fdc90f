"""Random search: uniform samples of well-typed architectures, without repeats."""

from __future__ import annotations

from typing import Any

import numpy as np

from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.strategies.base import STATE_VERSION, Strategy, propose_unseen, register_strategy


@register_strategy("random")
class RandomStrategy(Strategy):
    """Draws each architecture uniformly; redraws one it has already proposed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        self._told = 0

    def ask(self) -> Architecture:
        return propose_unseen(lambda: self.space.sample(self._rng), self._seen)

    def tell(self, arch: Architecture, result: Result) -> None:
        self._seen.add(arch.key)
        self._told += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self._rng.bit_generator.state = state["rng"]
