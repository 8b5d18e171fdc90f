"""ConstraintModel: what a strategy knows of its constraints, learned from every measured candidate.

A candidate over the latency budget is stored as pruned without being trained,
but its latency was measured (or, when a latency table screened it out, predicted):
it tells where the bound lies as well as a trained one does. The model keeps the
constrained values of every told candidate, fits one ridge regression per
constrained value on ``Architecture.encode()`` (on the logarithm when every value is
positive, as latency, size and MACs are near-multiplicative in the choices), and
predicts how far a proposal would break each bound. A predictor the search hands
in (the latency table's, where one covers the space) answers for its value instead.
Strategies ask it to pick, among candidates they would propose anyway, one that is
predicted to meet every constraint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from archetype.objectives import Constraint
from archetype.result import Result
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace

ESTIMATES = {"latency_ms": "predicted_latency_ms"}
"""A value a screened candidate carries only as a prediction: the name that prediction is stored under."""

MIN_OBSERVATIONS = 5
"""Below this many observations of a value, its bound is not judged (every proposal counts as feasible)."""

FALLBACK_TRIES = 30
"""How many fallback draws ``choose`` tries when none of its candidates is predicted feasible."""

RIDGE_ALPHA = 0.1
CAUTION = 1.0
"""A learned prediction counts as this many cross-validated residual deviations worse than its mean:
a proposal near the bound is judged by a prediction that errs towards breaking it."""

ValuePredictor = Callable[[Architecture], float | None]


def constrained_value(values: Mapping[str, float], name: str) -> float | None:
    """The measured ``name`` in ``values``, else its stored prediction (``predicted_latency_ms``), else None."""
    for key in (name, ESTIMATES.get(name)):
        value = values.get(key) if key else None
        if value is not None and math.isfinite(value):
            return float(value)
    return None


class ConstraintModel:
    """Predicted violation of the constraints for any architecture of ``space``, from every told result."""

    def __init__(self, space: SearchSpace, constraints: Sequence[Constraint]) -> None:
        self.space = space
        self.constraints = tuple(constraints)
        self._observed: list[dict[str, Any]] = []  # arch JSON and the constrained values it carried
        self._predictors: dict[str, ValuePredictor] = {}  # handed in by the search; not state
        self._fits: dict[str, tuple[int, Any]] = {}  # value name -> (observations fitted, model); a cache
        self._encoded: dict[str, np.ndarray] = {}  # arch key -> encoding; a cache
        self._rows: list[np.ndarray] = []  # the encoding of each observation; a cache

    @property
    def active(self) -> bool:
        """Whether there is a bound to judge at all."""
        return bool(self.constraints)

    def use_predictor(self, name: str, predict: ValuePredictor) -> None:
        """Answer ``name`` with ``predict`` (None where it cannot tell) before the learned regression."""
        self._predictors[name] = predict

    def observe(self, arch: Architecture, result: Result) -> None:
        """Keep the constrained values ``result`` carries, whatever its state."""
        values = {}
        for c in self.constraints:
            value = constrained_value(result.values, c.name)
            if value is not None:
                values[c.name] = value
        if values:
            self._observed.append({"arch": arch.to_json(), "values": values})
            self._rows.append(self._encode(arch))

    def predict(self, name: str, archs: Sequence[Architecture], caution: float = 0.0) -> np.ndarray:
        """Predicted ``name`` of each of ``archs`` (learned ones ``caution`` residual deviations high); NaN where
        nothing can tell yet."""
        out = np.full(len(archs), np.nan)
        predict = self._predictors.get(name)
        if predict is not None:
            for i, arch in enumerate(archs):
                value = predict(arch)
                if value is not None:
                    out[i] = value
        missing = np.flatnonzero(np.isnan(out))
        fitted = self._fitted(name) if len(missing) else None
        if fitted is not None:
            model, log, deviation = fitted
            guess = model.predict(np.stack([self._encode(archs[i]) for i in missing])) + caution * deviation
            out[missing] = np.exp(guess) if log else guess
        return out

    def margins(self, archs: Sequence[Architecture]) -> np.ndarray:
        """(N, constraints) predicted signed distance past each bound, relative to it: > 0 breaks it; 0 if unknown."""
        out = np.zeros((len(archs), len(self.constraints)))
        for j, c in enumerate(self.constraints):
            predicted = self.predict(c.name, archs, caution=CAUTION if c.op == "<=" else -CAUTION)
            gap = predicted - c.bound if c.op == "<=" else c.bound - predicted
            out[:, j] = np.nan_to_num(gap / (abs(c.bound) or 1.0), nan=0.0)
        return out

    def violations(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Predicted total violation of each of ``archs`` (the positive relative margins); 0 if unknown."""
        return np.maximum(self.margins(archs), 0.0).sum(axis=1)

    def choose(
        self,
        candidates: Sequence[Architecture],
        rng: np.random.Generator,
        fallback: Callable[[], Architecture] | None = None,
        tries: int = FALLBACK_TRIES,
    ) -> Architecture:
        """A random candidate among those predicted to meet every bound; else the first of up to ``tries``
        ``fallback()`` draws predicted to; else the least violating of all."""
        if not self.active or (len(candidates) == 1 and fallback is None):
            return candidates[int(rng.integers(len(candidates)))]
        candidates = list(candidates)
        violation = self.violations(candidates)
        feasible = np.flatnonzero(violation <= 0)
        if len(feasible):
            return candidates[int(feasible[rng.integers(len(feasible))])]
        if fallback is not None:
            for _ in range(tries):
                drawn = fallback()
                drawn_violation = self.violations([drawn])[0]
                if drawn_violation <= 0:
                    return drawn
                candidates.append(drawn)
                violation = np.append(violation, drawn_violation)
        return candidates[int(np.argmin(violation))]

    def _fitted(self, name: str) -> tuple[Any, bool, float] | None:
        """The regression of ``name`` on the encoding, whether it is in log space, and its 5-fold residual deviation."""
        rows = [i for i, o in enumerate(self._observed) if name in o["values"]]
        if len(rows) < MIN_OBSERVATIONS:
            return None
        cached = self._fits.get(name)
        if cached is not None and cached[0] == len(rows):
            return cached[1]
        from sklearn.linear_model import Ridge
        from sklearn.model_selection import cross_val_predict

        x = np.stack([self._rows[i] for i in rows])
        y = np.array([self._observed[i]["values"][name] for i in rows])
        log = bool(np.all(y > 0))
        target = np.log(y) if log else y
        model = Ridge(alpha=RIDGE_ALPHA).fit(x, target)
        held_out = cross_val_predict(Ridge(alpha=RIDGE_ALPHA), x, target, cv=5)
        fitted = (model, log, float(np.std(held_out - target)))
        self._fits[name] = (len(rows), fitted)
        return fitted

    def _encode(self, arch: Architecture) -> np.ndarray:
        key = arch.key
        if key not in self._encoded:
            self._encoded[key] = np.asarray(arch.encode(), dtype=float)
        return self._encoded[key]

    def state_dict(self) -> list[dict[str, Any]]:
        return self._observed

    def load_state_dict(self, observed: Sequence[Mapping[str, Any]]) -> None:
        self._observed = [{"arch": dict(o["arch"]), "values": dict(o["values"])} for o in observed]
        self._rows = [self._encode(self.space.architecture_from_json(o["arch"])) for o in self._observed]
        self._fits = {}
