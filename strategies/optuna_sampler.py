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

One in-memory study lives as long as the strategy; each ask draws from a fresh
sampler seeded by ``(seed, asks so far)``. The saved state is that counter and
the system attributes each trial was asked with (a GA's generation, stored
run-length, so one entry per generation); on resume the study is rebuilt from
the stored trials with ``study.add_trial``. An ill-typed or repeated draw is
told as failed. A candidate pruned for breaking a bound, never trained, is told
as an infeasible complete trial (stand-ins for the objectives it lacks), so the
samplers learn from it; a draw the strategy's ``ConstraintModel`` predicts to
break a bound is set aside and the sampler draws again (up to
``MAX_RETRIES`` draws; then the least violating).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from archetype.errors import TypeCheckError
from archetype.objectives import Constraint
from archetype.result import Result, TrialState
from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.space import SearchSpace
from archetype.strategies.base import (
    STATE_VERSION,
    StoredTrial,
    Strategy,
    check_option,
    propose_unseen,
    register_strategy,
)
from archetype.strategies.constraint_model import constrained_value

CONSTRAINT_PREFIX = "constraints:"  # where Optuna 5 keeps a trial's constraint values
GENERATION_SUFFIX = ":generation"  # the system attribute of Optuna's genetic samplers kept across a resume
MAX_RETRIES = 20  # duplicate, ill-typed or predicted-infeasible draws before the fallback


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
    """Drives one of Optuna's samplers through ask/tell on one live in-memory study; subclasses say which sampler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._distributions = space_distributions(self.space)
        self._live: Any = None  # the Optuna study, made on first use
        self._running: dict[str, Any] = {}  # asked, not told: arch key -> its Optuna trial
        self._asked_with: dict[str, dict[str, Any]] = {}  # running at a resume: arch key -> its system attrs
        self._worst: list[float | None] = [None] * len(self.objectives)  # worst told value of each objective
        self._attrs: list[list[Any]] = []  # system attrs of each asked trial in ask order, run-length: [attrs, count]
        self._asked = 0

    def make_sampler(self, seed: int) -> Any:
        """The Optuna sampler for one ask."""
        raise NotImplementedError

    def _study(self) -> Any:
        if self._live is None:
            self._live = _optuna().create_study(directions=[o.direction.value for o in self.objectives])
        return self._live

    def ask(self) -> Architecture:
        optuna = _optuna()
        seed = int(np.random.SeedSequence([self.seed, self._asked]).generate_state(1)[0])
        self._asked += 1
        study = self._study()
        study.sampler = self.make_sampler(seed)
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
                attrs = _read_back(study.get_trials(deepcopy=False)[trial.number].system_attrs)
                margins = self.constraint_model.margins([arch])[0] if self.constraint_model.active else None
                if margins is None or not np.any(margins > 0):
                    self._remember(arch, trial, attrs)
                    return arch
                # predicted to break a bound: drawn again (told as failed, which samplers ignore, so a resume
                # rebuilt from the stored trials alone proposes the same)
                doubtful.append((float(np.maximum(margins, 0).sum()), arch, attrs))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # a repeat: the sampler learns nothing from it
        rng = np.random.default_rng(seed)
        if doubtful:  # every unseen draw looked infeasible: a random one predicted feasible, else the least violating
            _, arch, attrs = min(doubtful, key=lambda d: d[0])

            def unseen() -> Architecture:
                return propose_unseen(lambda: self.space.sample(rng), set(self._seen))

            chosen = self.constraint_model.choose([arch], rng, fallback=unseen)
            self._remember(chosen, None, attrs if chosen is arch else {})
            return chosen
        arch = self.space.sample(rng)
        for _ in range(MAX_RETRIES):
            if arch.key not in self._seen:
                break
            arch = self.space.sample(rng)
        self._remember(arch, None, {})
        return arch

    def tell(self, arch: Architecture, result: Result) -> None:
        optuna = _optuna()
        trial = self._running.pop(arch.key, None)
        self._seen.add(arch.key)
        self.constraint_model.observe(arch, result)
        values = self._objective_values(result)
        margins = [_margin(c, result.values) for c in self.constraints]
        if trial is None:  # a random fallback, or asked before a resume
            attrs = self._asked_with.pop(arch.key, {})
            self._study().add_trial(self._frozen(architecture_params(arch), values, margins, attrs))
        else:
            for i, margin in enumerate(margins):
                trial.set_constraint(str(i), margin)
            if values is None:
                self._study().tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self._study().tell(trial, values)
        self._note_worst(values)

    def restore(self, state: Mapping[str, Any] | None, trials: Sequence[StoredTrial]) -> None:
        """Rebuild the live study from the stored trials in ask order, each with the system attrs it was asked with."""
        if state is not None and state.get("version") == STATE_VERSION:
            self.load_state_dict(dict(state))
        else:
            self._asked = len(trials)
        attrs = [a for a, count in self._attrs for _ in range(count)]
        study = self._study()
        for trial in sorted(trials, key=lambda t: t.number):
            self._seen.add(trial.arch.key)
            asked_with = attrs[trial.number - 1] if trial.number <= len(attrs) else {}
            if trial.result is None:  # told when it finishes, as a trial added then
                self._asked_with[trial.arch.key] = asked_with
                continue
            self.constraint_model.observe(trial.arch, trial.result)
            values = self._objective_values(trial.result)
            margins = [_margin(c, trial.result.values) for c in self.constraints]
            study.add_trial(self._frozen(architecture_params(trial.arch), values, margins, asked_with))
            self._note_worst(values)

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
            else:
                worst = self._worst[i]
                out.append(float(worst) if worst is not None else 0.0)
        return out

    def _note_worst(self, values: list[float] | None) -> None:
        if values is None:
            return
        for i, (obj, value) in enumerate(zip(self.objectives, values, strict=True)):
            worst = self._worst[i]
            if worst is None or obj.better(worst, value):
                self._worst[i] = value

    def _remember(self, arch: Architecture, trial: Any, attrs: dict[str, Any]) -> None:
        self._seen.add(arch.key)
        if trial is not None:
            self._running[arch.key] = trial
        if self._attrs and self._attrs[-1][0] == attrs:
            self._attrs[-1][1] += 1
        else:
            self._attrs.append([attrs, 1])

    def _frozen(
        self, params: Mapping[str, Any], values: list[float] | None, margins: list[float], attrs: Mapping[str, Any]
    ) -> Any:
        optuna = _optuna()
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL if values is None else optuna.trial.TrialState.COMPLETE,
            values=values,
            params=dict(params),
            distributions={k: self._distributions[k] for k in params},
            system_attrs={**attrs, **{f"{CONSTRAINT_PREFIX}{i}": v for i, v in enumerate(margins)}},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "seed": self.seed,
            "asked": self._asked,
            "attrs": self._attrs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state(state)
        self.seed = int(state["seed"])
        self._asked = int(state["asked"])
        self._attrs = [[dict(a), int(n)] for a, n in state["attrs"]]


def _margin(constraint: Constraint, values: Mapping[str, float]) -> float:
    """Signed distance to the bound, zero or less where met; 1.0 where the value is missing."""
    value = constrained_value(values, constraint.name)
    if value is None:
        return 1.0
    return float(value - constraint.bound if constraint.op == "<=" else constraint.bound - value)


def _read_back(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The system attributes a sampler reads back from other trials: a genetic sampler's generation number."""
    return {key: int(value) for key, value in attrs.items() if key.endswith(GENERATION_SUFFIX)}


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
