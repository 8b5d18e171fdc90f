"""Optuna's samplers (TPE, NSGA-II, NSGA-III, GP) over the typed space, through ``study.ask``.

The space maps to Optuna distributions: each slot's operator is a categorical
named ``slot`` and each searched hyperparameter a categorical named
``slot.op.param``, asked only when ``op`` is chosen (conditional, define-by-run).
Constraints reach the samplers as Optuna 5 trial constraints (the values that
``Trial.set_constraint`` stores): ``value - bound`` for ``<=``, ``bound - value``
for ``>=``, so zero or less is feasible. A candidate pruned for breaking one,
never trained, is told as an infeasible complete trial (stand-ins for the
objectives it lacks), so the samplers learn from it. A draw the strategy's
``ConstraintModel`` predicts to break a bound is told to the ask's study as such,
and the sampler draws again (up to ``MAX_RETRIES`` draws; then the least violating).

For exact resumption the strategy keeps only plain data, the told history:
each ask builds a fresh in-memory study, replays the history with
``study.add_trial`` and draws from a sampler seeded by ``(seed, asks so far)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from archetype.errors import TypeCheckError
from archetype.objectives import Constraint, Direction
from archetype.result import Result, TrialState
from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.space import SearchSpace
from archetype.strategies.base import STATE_VERSION, Strategy, check_option, propose_unseen, register_strategy
from archetype.strategies.constraint_model import constrained_value

CONSTRAINT_PREFIX = "constraints:"  # where Optuna 5 keeps a trial's constraint values
MAX_RETRIES = 5  # duplicate or ill-typed draws before a random unseen architecture


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def space_distributions(space: SearchSpace) -> dict[str, Any]:
    """Every Optuna distribution the space can ask, by parameter name."""
    optuna = _optuna()
    dists: dict[str, Any] = {}
    for slot in space.slots:
        dists[slot.name] = optuna.distributions.CategoricalDistribution([c.op for c in slot.candidates])
        for cand in slot.candidates:
            for name, values in cand.domain:
                dists[f"{slot.name}.{cand.op}.{name}"] = optuna.distributions.CategoricalDistribution(list(values))
    return dists


def suggest_architecture(space: SearchSpace, trial: Any) -> Architecture:
    """The architecture an Optuna trial picks (not yet type-checked)."""
    choices = []
    for slot in space.slots:
        op = trial.suggest_categorical(slot.name, [c.op for c in slot.candidates])
        cand = next(c for c in slot.candidates if c.op == op)
        params = {name: trial.suggest_categorical(f"{slot.name}.{op}.{name}", list(values))
                  for name, values in cand.domain}
        choices.append(Choice.of(slot.name, op, params))
    return space.architecture(tuple(choices))


def architecture_params(arch: Architecture) -> dict[str, Any]:
    """The Optuna parameters that pick ``arch``."""
    params: dict[str, Any] = {}
    for choice in arch.choices:
        params[choice.slot] = choice.op
        for name, value in choice.params:
            params[f"{choice.slot}.{choice.op}.{name}"] = value
    return params


class OptunaStrategy(Strategy):
    """Drives one of Optuna's samplers through ask/tell; subclasses say which sampler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._distributions = space_distributions(self.space)
        self._history: list[dict[str, Any]] = []  # told trials: params, values, constraints, state
        self._pending: dict[str, dict[str, Any]] = {}  # asked, not told: arch key -> system attrs
        self._seen: set[str] = set()
        self._asked = 0

    def make_sampler(self, seed: int) -> Any:
        """The Optuna sampler for one ask."""
        raise NotImplementedError

    def ask(self) -> Architecture:
        optuna = _optuna()
        seed = int(np.random.SeedSequence([self.seed, self._asked]).generate_state(1)[0])
        self._asked += 1
        sampler = self.make_sampler(seed)
        study = optuna.create_study(directions=[o.direction.value for o in self.objectives], sampler=sampler)
        for item in self._history:
            study.add_trial(self._frozen(item))
        told = {self._key_of(item["params"]): item for item in self._history}
        doubtful: list[tuple[float, Architecture, dict[str, Any]]] = []  # unseen draws predicted infeasible
        for _ in range(MAX_RETRIES):
            trial = study.ask()
            arch = suggest_architecture(self.space, trial)
            try:
                arch.typing()
            except TypeCheckError:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            if arch.key not in self._seen:
                margins = self.constraint_model.margins([arch])[0] if self.constraint_model.active else None
                if margins is None or not np.any(margins > 0):
                    self._remember(arch, dict(study.trials[-1].system_attrs))
                    return arch
                # predicted to break a bound: the study learns so before the next draw
                doubtful.append((float(np.maximum(margins, 0).sum()), arch, dict(study.trials[-1].system_attrs)))
                for i, value in enumerate(margins):
                    trial.set_constraint(str(i), float(value))
                study.tell(trial, self._stand_ins({}))
                continue
            if arch.key in told and told[arch.key]["state"] == "complete":
                for i, value in enumerate(told[arch.key]["constraints"]):
                    trial.set_constraint(str(i), value)
                study.tell(trial, told[arch.key]["values"])
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        rng = np.random.default_rng(seed)
        if doubtful:  # every unseen draw looked infeasible: a random one predicted feasible, else the least violating
            _, arch, attrs = min(doubtful, key=lambda d: d[0])

            def unseen() -> Architecture:
                return propose_unseen(lambda: self.space.sample(rng), set(self._seen))

            chosen = self.constraint_model.choose([arch], rng, fallback=unseen)
            self._remember(chosen, attrs if chosen is arch else {})
            return chosen
        arch = self.space.sample(rng)
        for _ in range(MAX_RETRIES):
            if arch.key not in self._seen:
                break
            arch = self.space.sample(rng)
        self._remember(arch, {})
        return arch

    def tell(self, arch: Architecture, result: Result) -> None:
        pending = self._pending.pop(arch.key, None)
        self._seen.add(arch.key)
        self.constraint_model.observe(arch, result)
        values = self._objective_values(result)
        margins = [_margin(c, result.values) for c in self.constraints]
        self._history.append({
            "params": architecture_params(arch),
            "system_attrs": pending["system_attrs"] if pending else {},
            "state": "complete" if values is not None else "fail",
            "values": values,
            "constraints": margins,
        })

    def _objective_values(self, result: Result) -> list[float] | None:
        """Objective values for Optuna; a trial pruned for breaking a constraint gets stand-ins for the
        objectives it lacks, so that samplers still see it, infeasible, and learn where the bound lies."""
        if result.state is TrialState.FAILED or not self.objectives:
            return None
        values = {o.name: v for o in self.objectives
                  if (v := result.values.get(o.name)) is not None and math.isfinite(v)}
        if len(values) < len(self.objectives) and result.state is not TrialState.PRUNED:
            return None
        return self._stand_ins(values)

    def _stand_ins(self, values: Mapping[str, float]) -> list[float]:
        """Each objective's value from ``values``, else the worst told one (0 before any is told)."""
        out = []
        for i, obj in enumerate(self.objectives):
            if obj.name in values:
                out.append(float(values[obj.name]))
                continue
            told = [h["values"][i] for h in self._history if h["state"] == "complete"]
            out.append(float((min(told) if obj.direction is Direction.MAXIMIZE else max(told)) if told else 0.0))
        return out

    def _remember(self, arch: Architecture, system_attrs: dict[str, Any]) -> None:
        self._seen.add(arch.key)
        self._pending[arch.key] = {"system_attrs": _json_safe(system_attrs)}

    def _key_of(self, params: Mapping[str, Any]) -> str:
        choices = []
        for slot in self.space.slots:
            op = params[slot.name]
            prefix = f"{slot.name}.{op}."
            choices.append(Choice.of(slot.name, op, {k[len(prefix):]: v for k, v in params.items()
                                                     if k.startswith(prefix)}))
        return self.space.architecture(tuple(choices)).key

    def _frozen(self, item: Mapping[str, Any]) -> Any:
        optuna = _optuna()
        complete = item["state"] == "complete"
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL,
            values=item["values"] if complete else None,
            params=dict(item["params"]),
            distributions={k: self._distributions[k] for k in item["params"]},
            system_attrs={
                **item["system_attrs"],
                **{f"{CONSTRAINT_PREFIX}{i}": v for i, v in enumerate(item["constraints"])},
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "seed": self.seed,
            "asked": self._asked,
            "history": self._history,
            "pending": self._pending,
            "seen": sorted(self._seen),
            "constraint_observations": self.constraint_model.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.seed = int(state["seed"])
        self._asked = int(state["asked"])
        self._history = [dict(h) for h in state["history"]]
        self._pending = {k: dict(v) for k, v in state["pending"].items()}
        self._seen = set(state["seen"])
        self.constraint_model.load_state_dict(state.get("constraint_observations", []))


def _margin(constraint: Constraint, values: Mapping[str, float]) -> float:
    """Signed distance to the bound, zero or less where met; 1.0 where the value is missing."""
    value = constrained_value(values, constraint.name)
    if value is None:
        return 1.0
    return float(value - constraint.bound if constraint.op == "<=" else constraint.bound - value)


def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """System attributes that survive JSON (the samplers' generation counters and parents)."""
    safe = {}
    for key, value in attrs.items():
        if key.startswith(CONSTRAINT_PREFIX) or key == "fixed_params":
            continue
        if isinstance(value, str | int | float | bool | type(None)) or (
            isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value)
        ):
            safe[key] = list(value) if isinstance(value, tuple) else value
    return safe


@register_strategy("tpe")
class TpeStrategy(OptunaStrategy):
    """Optuna's (multi-objective) TPE sampler; ``startup`` random trials first."""

    def __init__(self, *args: Any, startup: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.startup = check_option(self.name, "startup", startup, int, minimum=1)

    def make_sampler(self, seed: int) -> Any:
        optuna = _optuna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # multivariate with groups: the joint density over each operator's own hyperparameters
            return optuna.samplers.TPESampler(n_startup_trials=self.startup, seed=seed, multivariate=True, group=True)


@register_strategy("nsga2")
class Nsga2Strategy(OptunaStrategy):
    """Optuna's NSGA-II sampler with a ``population`` per generation."""

    def __init__(self, *args: Any, population: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population = check_option(self.name, "population", population, int, minimum=2)

    def make_sampler(self, seed: int) -> Any:
        return _optuna().samplers.NSGAIISampler(population_size=self.population, seed=seed)


@register_strategy("nsga3")
class Nsga3Strategy(OptunaStrategy):
    """Optuna's NSGA-III sampler (reference-point niching) with a ``population`` per generation."""

    def __init__(self, *args: Any, population: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population = check_option(self.name, "population", population, int, minimum=2)

    def make_sampler(self, seed: int) -> Any:
        optuna = _optuna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIIISampler(population_size=self.population, seed=seed)


@register_strategy("gp")
class GpStrategy(OptunaStrategy):
    """Optuna's Gaussian-process sampler; ``startup`` random trials first.

    The GP models the parameters every trial shares (each slot's operator); the
    hyperparameters of the chosen operators, being conditional, are drawn at random.
    Each ask refits the GPs and optimises the acquisition: seconds per ask.
    """

    def __init__(self, *args: Any, startup: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.startup = check_option(self.name, "startup", startup, int, minimum=1)

    def make_sampler(self, seed: int) -> Any:
        return _optuna().samplers.GPSampler(n_startup_trials=self.startup, seed=seed, warn_independent_sampling=False)
