"""Balanced mixture of supernets: K supernets and a balanced, learned assignment of configurations to them.

From "Balanced Mixture of SuperNets for Learning the CNN Pooling Architecture" (AutoML 2023): a
matrix W (configuration x supernet) starts at 1; p(supernet | configuration) is softmax(T * W) per
row, T rising from 1 to 100 over training, balanced by dividing by the column marginal and
renormalising rows until KL(marginal || uniform) <= 1e-4. After training a configuration on a
supernet, W moves towards its validation-batch accuracy (a 0.9 moving average). Each configuration
is finally scored on its best supernet.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from archetype.searchspace.architecture import Architecture

BALANCE_TOLERANCE = 1e-4
"""KL(marginal || uniform) at which balancing stops."""
MAX_BALANCE_ROUNDS = 1000


def downsampling_pattern(arch: Architecture) -> tuple[Any, ...]:
    """The default configuration of an architecture: the spatial size after every slot (where it downsamples)."""
    return tuple(tuple(t.output.dims()[1:]) for t in arch.typing())


def balance(probabilities: np.ndarray, tolerance: float = BALANCE_TOLERANCE) -> np.ndarray:
    """Rows of p(supernet | configuration), rescaled so that the supernets' marginal is near uniform."""
    p = np.asarray(probabilities, dtype=np.float64).copy()
    for _ in range(MAX_BALANCE_ROUNDS):
        marginal = p.mean(axis=0)
        if kl_to_uniform(marginal) <= tolerance:
            break
        p = p / np.maximum(marginal, 1e-300)
        p = p / p.sum(axis=1, keepdims=True)
    return p


def kl_to_uniform(marginal: np.ndarray) -> float:
    """KL(marginal || uniform) in nats."""
    m = np.asarray(marginal, dtype=np.float64)
    m = m / m.sum()
    nonzero = m > 0
    return float(np.sum(m[nonzero] * np.log(m[nonzero] * len(m))))


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class BalancedAssignment:
    """The matrix W over configurations (rows, added as they are met) and ``k`` supernets (columns)."""

    def __init__(self, k: int, momentum: float = 0.9, t_start: float = 1.0, t_end: float = 100.0) -> None:
        if k < 1:
            raise ValueError(f"a mixture needs at least one supernet, got {k}")
        self.k = k
        self.momentum = momentum
        self.t_start, self.t_end = t_start, t_end
        self.configs: list[Hashable] = []
        self._rows: dict[Hashable, int] = {}
        self.weights = np.ones((0, k))

    def add(self, config: Hashable) -> int:
        """The row of ``config``, added with W = 1 if new."""
        row = self._rows.get(config)
        if row is None:
            row = self._rows[config] = len(self.configs)
            self.configs.append(config)
            self.weights = np.vstack([self.weights, np.ones((1, self.k))])
        return row

    def temperature(self, progress: float) -> float:
        """T at a point of training (0 to 1): geometric from ``t_start`` to ``t_end``."""
        progress = min(max(progress, 0.0), 1.0)
        return float(self.t_start * (self.t_end / self.t_start) ** progress)

    def probabilities(self, progress: float) -> np.ndarray:
        """Balanced p(supernet | configuration), one row per configuration."""
        if not self.configs:
            return np.ones((0, self.k))
        return balance(softmax_rows(self.temperature(progress) * self.weights))

    def sample(self, config: Hashable, progress: float, rng: np.random.Generator) -> int:
        """A supernet for ``config`` drawn from the balanced probabilities."""
        row = self.add(config)
        p = self.probabilities(progress)[row]
        return int(rng.choice(self.k, p=p / p.sum()))

    def update(self, config: Hashable, supernet: int, accuracy: float) -> None:
        """Move W[config, supernet] towards ``accuracy`` (a moving average with ``momentum``)."""
        row = self.add(config)
        self.weights[row, supernet] = self.momentum * self.weights[row, supernet] + (1 - self.momentum) * accuracy

    def best(self, config: Hashable) -> int | None:
        """The supernet with the highest W for ``config``; None for a configuration never trained."""
        row = self._rows.get(config)
        return None if row is None else int(np.argmax(self.weights[row]))

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "configs": [_listed(c) for c in self.configs], "weights": self.weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["k"] != self.k:
            raise ValueError(f"assignment state is for {state['k']} supernets, not {self.k}")
        self.configs = [_hashable(c) for c in state["configs"]]
        self._rows = {c: i for i, c in enumerate(self.configs)}
        self.weights = np.asarray(state["weights"], dtype=np.float64).reshape(len(self.configs), self.k)


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, tuple) else value


def _hashable(value: Any) -> Hashable:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
