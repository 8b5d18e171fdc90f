"""Predictor-guided multi-objective search, as in SimQ-NAS and LINAS.

Evaluate ``initial`` random architectures; then, each round, fit one light
regressor per objective and per constrained value (``ridge``, RBF ``svr`` or
extra ``tree``s, from scikit-learn) on ``Architecture.encode()``, each from every
told result that carries the value (a candidate pruned for its latency, never
trained, still teaches the latency model), run NSGA-II on the predictions for
about ``predicted`` predicted evaluations, and propose the best ``batch`` unseen
architectures of the final population for real evaluation. The constraints are
judged by the strategy's ``ConstraintModel`` (fitted on every measured candidate,
or the search's latency predictor where one covers the space); past the random
start, a random proposal too is one the model predicts to meet them. NSGA-II
here is a small implementation: constrained domination (feasible first, then by
predicted violation), crowding distance, uniform crossover per slot and a
one-slot mutation, both kept only when well-typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from archetype.errors import TypeCheckError
from archetype.objectives import Direction
from archetype.pareto import crowding_distances, nondominated_ranks_array
from archetype.result import Result, TrialState
from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.space import Slot
from archetype.strategies.base import STATE_VERSION, Strategy, check_option, propose_unseen, register_strategy
from archetype.strategies.constraint_model import constrained_value

PREDICTORS = ("ridge", "svr", "tree")


def make_predictor(kind: str, seed: int) -> Any:
    """A fresh scikit-learn regressor of ``kind``; targets are standardised by the caller."""
    if kind == "ridge":
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0)
    if kind == "svr":
        from sklearn.svm import SVR

        return SVR(kernel="rbf", C=3.0, epsilon=0.05)
    from sklearn.ensemble import ExtraTreesRegressor

    return ExtraTreesRegressor(n_estimators=40, min_samples_leaf=2, random_state=seed)


@register_strategy("simq")
class PredictorGuidedSearch(Strategy):
    """Random start, then rounds of predictor fitting and NSGA-II on the predictions."""

    def __init__(
        self,
        *args: Any,
        initial: int = 20,
        batch: int = 10,
        predictor: str = "ridge",
        predicted: int = 2000,
        nsga_population: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.initial = check_option(self.name, "initial", initial, int, minimum=2)
        self.batch = check_option(self.name, "batch", batch, int, minimum=1)
        self.predictor = check_option(self.name, "predictor", predictor, str, choices=PREDICTORS)
        self.predicted = check_option(self.name, "predicted", predicted, int, minimum=1)
        self.nsga_population = check_option(self.name, "nsga_population", nsga_population, int, minimum=4)
        self._rng = np.random.default_rng(self.seed)
        self._queue: list[dict[str, Any]] = []  # arch JSON proposed by the last round, not yet asked
        self._told: list[dict[str, Any]] = []  # arch JSON and the values that matter
        self._asked = 0
        self._rounds = 0
        self._well_typed: dict[tuple[Choice, ...], bool] = {}  # caches, not state: typing and encoding cost ms
        self._encoded: dict[tuple[Choice, ...], list[float]] = {}

    # -- ask/tell ------------------------------------------------------------------------------

    def ask(self) -> Architecture:
        self._asked += 1
        while self._queue:
            arch = self.space.architecture_from_json(self._queue.pop(0))
            if arch.key not in self._seen:
                self._seen.add(arch.key)
                return arch
        if self._asked <= self.initial:
            return propose_unseen(lambda: self.space.sample(self._rng), self._seen)
        if len(self._usable()) >= 2:
            self._queue = [a.to_json() for a in self._round()]
            self._rounds += 1
            if self._queue:
                arch = self.space.architecture_from_json(self._queue.pop(0))
                self._seen.add(arch.key)
                return arch

        def unseen() -> Architecture:
            return propose_unseen(lambda: self.space.sample(self._rng), set(self._seen))

        arch = self.constraint_model.choose([unseen()], self._rng, fallback=unseen)
        self._seen.add(arch.key)
        return arch

    def tell(self, arch: Architecture, result: Result) -> None:
        self._seen.add(arch.key)
        self.constraint_model.observe(arch, result)
        values = {n: v for n in self._modelled() if (v := constrained_value(result.values, n)) is not None}
        self._told.append({"arch": arch.to_json(), "values": values, "failed": result.state is TrialState.FAILED})

    # -- one round -----------------------------------------------------------------------------

    def _modelled(self) -> list[str]:
        """Objectives, then constrained values that are not objectives."""
        names = [o.name for o in self.objectives]
        return names + [c.name for c in self.constraints if c.name not in names]

    def _usable(self) -> list[dict[str, Any]]:
        """Told trials with every objective (what ranks the seeds of NSGA-II)."""
        names = [o.name for o in self.objectives]
        return [t for t in self._told if not t["failed"] and all(n in t["values"] for n in names)]

    def _round(self) -> list[Architecture]:
        """Fit the predictors, run NSGA-II on them, return up to ``batch`` unseen proposals."""
        usable = self._usable()
        archs = [self.space.architecture_from_json(t["arch"]) for t in usable]
        models = []
        for obj in self.objectives:
            told = [t for t in self._told if obj.name in t["values"]]
            x = np.array([self._encode(self.space.architecture_from_json(t["arch"])) for t in told])
            y = np.array([t["values"][obj.name] for t in told])
            mean, scale = y.mean(), y.std() or 1.0
            model = make_predictor(self.predictor, int(self._rng.integers(2**31)))
            model.fit(x, (y - mean) / scale)
            models.append((model, mean, scale))

        def predict(population: Sequence[Architecture]) -> tuple[np.ndarray, np.ndarray]:
            feats = np.array([self._encode(a) for a in population])
            preds = np.column_stack([m.predict(feats) * s + mu for m, mu, s in models])
            return self._costs(preds), self.constraint_model.violations(population)

        seeds = [a for a, _ in sorted(zip(archs, self._rank_told(usable), strict=True), key=lambda p: p[1])]
        population = _unique(seeds[: self.nsga_population // 2])
        while len(population) < self.nsga_population:
            population = _unique([*population, self.space.sample(self._rng)])
        costs, violations = predict(population)
        generations = max(1, self.predicted // self.nsga_population)
        for _ in range(generations):
            order = _constrained_order(costs, violations)
            children = [self._child(population, order) for _ in range(self.nsga_population)]
            merged = _unique([*population, *children])
            merged_costs, merged_violations = predict(merged)
            keep = _constrained_order(merged_costs, merged_violations)[: self.nsga_population]
            population = [merged[i] for i in keep]
            costs, violations = merged_costs[keep], merged_violations[keep]
        ranked = [population[i] for i in _constrained_order(costs, violations)]
        return [a for a in ranked if a.key not in self._seen][: self.batch]

    def _rank_told(self, usable: list[dict[str, Any]]) -> list[int]:
        names = [o.name for o in self.objectives]
        values = np.array([[t["values"][n] for n in names] for t in usable])
        violations = np.array([sum(c.violation(t["values"]) or 0.0 for c in self.constraints) for t in usable])
        return list(_constrained_order(self._costs(values), violations).argsort())

    def _costs(self, values: np.ndarray) -> np.ndarray:
        signs = np.array([-1.0 if o.direction is Direction.MAXIMIZE else 1.0 for o in self.objectives])
        return values[:, : len(self.objectives)] * signs

    def _child(self, population: list[Architecture], order: np.ndarray) -> Architecture:
        position = np.empty(len(order), dtype=int)
        position[order] = np.arange(len(order))

        def tournament() -> Architecture:
            i, j = self._rng.integers(len(population), size=2)
            return population[i if position[i] < position[j] else j]

        mother, father = tournament(), tournament()
        child = self.space.crossover(mother, father, self._rng) or mother
        for _ in range(5):
            i = int(self._rng.integers(len(self.space.slots)))
            choices = (*child.choices[:i], self._random_choice(self.space.slots[i]), *child.choices[i + 1 :])
            mutated = self._typed(choices)
            if mutated is not None:
                return mutated
        return child

    def _random_choice(self, slot: Slot) -> Choice:
        cand = slot.candidates[int(self._rng.integers(len(slot.candidates)))]
        params = {k: v[int(self._rng.integers(len(v)))] for k, v in cand.domain}
        return Choice.of(slot.name, cand.op, {k: v.item() if isinstance(v, np.generic) else v
                                              for k, v in params.items()})

    def _typed(self, choices: tuple[Choice, ...]) -> Architecture | None:
        arch = self.space.architecture(choices)
        if choices not in self._well_typed:
            try:
                arch.typing()
                self._well_typed[choices] = True
            except TypeCheckError:
                self._well_typed[choices] = False
        return arch if self._well_typed[choices] else None

    def _encode(self, arch: Architecture) -> list[float]:
        if arch.choices not in self._encoded:
            self._encoded[arch.choices] = arch.encode()
        return self._encoded[arch.choices]

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "rng": self._rng.bit_generator.state,
            "queue": self._queue,
            "asked": self._asked,
            "rounds": self._rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self._rng.bit_generator.state = state["rng"]
        self._queue = list(state["queue"])
        self._asked = int(state["asked"])
        self._rounds = int(state["rounds"])


def _unique(archs: Sequence[Architecture]) -> list[Architecture]:
    seen: set[tuple[Choice, ...]] = set()  # equal choices in one space: the same architecture
    out = []
    for a in archs:
        if a.choices not in seen:
            seen.add(a.choices)
            out.append(a)
    return out


def _constrained_order(costs: np.ndarray, violations: np.ndarray) -> np.ndarray:
    """Indices best first: feasible by non-dominated rank then crowding, then infeasible by violation."""
    feasible = np.flatnonzero(violations <= 0)
    infeasible = np.flatnonzero(violations > 0)
    ordered: list[int] = []
    if len(feasible):
        ranks = nondominated_ranks_array(costs[feasible])
        for rank in range(int(ranks.max()) + 1):
            members = feasible[ranks == rank]
            crowding = crowding_distances(costs[members])
            ordered.extend(members[np.argsort(-crowding, kind="stable")].tolist())
    ordered.extend(infeasible[np.argsort(violations[infeasible], kind="stable")].tolist())
    return np.array(ordered, dtype=int)
