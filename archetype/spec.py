"""RunSpec: everything a search needs, validated once at the edge (CLI flags or a YAML file)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import AliasChoices, Field, field_validator, model_validator

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint, Direction, Objective
from archetype.registry import Registry
from archetype.runtime.devices import available_cpus, check_device_name, resolve_device
from archetype.runtime.training import RECIPES
from archetype.searchspace.bounds import ArchitectureLimits
from archetype.searchspace.operator import PRECISIONS
from archetype.searchspace.yaml_space import safe_load_bounded
from archetype.strategies import supernet_strategies
from archetype.validation import checked, count, number, text

if TYPE_CHECKING:
    from archetype.tune import AshaSettings

CEILINGS = {"trials": 1_000_000, "epochs": 10_000, "workers": 4096, "supernets": 64, "finalists": 10_000}
"""The largest counts a run spec may ask for: more is a typo, not a search."""


def _load_schedulers() -> None:
    from archetype.tune import AshaSettings

    SCHEDULERS.add("asha", AshaSettings)


SCHEDULERS: Registry[type[AshaSettings]] = Registry("scheduler", load=_load_schedulers)
"""Early stoppers a search may run under, by name -> their settings; None trains every candidate for all its epochs."""

GPU_SHARE = "be a share of one GPU (0 to 1) or a whole number"


@checked(frozen=True)
class RunSpec:
    """A latency-constrained search: what to search, on which data and target, under which budget."""

    space: str = text()  # a predefined space name or a .yaml file
    data: str = text("digits")  # digits | mnist | npz:PATH | folder:PATH | cifar10:PATH | cifar100:PATH
    target: str = text("cpu-ort")  # where latency is measured
    strategy: str = text("random")
    strategy_options: dict[str, Any] = Field(default_factory=dict, description="map option names to values")
    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    constraints: tuple[Constraint, ...] = ()
    trials: int = count(20, ceiling=CEILINGS["trials"])  # evaluations in the study
    epochs: int = count(5, ceiling=CEILINGS["epochs"])  # training epochs per evaluation
    # fixes the data split, the strategy and the weight initialisation
    seed: int = Field(0, strict=True, ge=0, lt=2**63, description="be an integer from 0 to 2**63-1")
    # evaluations at once; more than one shares the cores and makes latency noisier
    workers: int = count(1, ceiling=CEILINGS["workers"])
    cpus_per_trial: float | None = number(None)  # None: every core with one local worker, else 1
    # None: a 1/workers share of a GPU when training runs on CUDA, else 0
    gpus_per_trial: float | None = number(None, positive=False, requirement=GPU_SHARE)
    # where candidates train: auto (CUDA when present), cpu, cuda, cuda:N
    device: str = Field("auto", strict=True, description="be a device name")
    # the training preset of each candidate (archetype.runtime.training.RECIPES)
    recipe: str = Field("quick", strict=True, description=f"be one of {', '.join(RECIPES)}")
    study: str | None = text(None)  # default: "<space>-<n>"
    ray_address: str | None = text(None)  # None: a local Ray runtime
    # runs again of an evaluation whose worker was lost, before it is stored as failed
    retries: int = count(2, minimum=0, ceiling=100, requirement="be a non-negative integer of at most 100")
    scheduler: str | None = None  # "asha": run through Ray Tune and stop weak candidates early on epochs
    # strategy "oneshot": supernets trained (K > 1: a balanced mixture)
    supernets: int = count(1, ceiling=CEILINGS["supernets"])
    supernet_epochs: int | None = count(None)  # strategy "oneshot": supernet training epochs (default 4 x epochs)
    # strategy "oneshot": best scored candidates then trained from scratch and measured
    finalists: int = count(3, ceiling=CEILINGS["finalists"])
    # prune on predicted latency; None: when a latency table covers the space
    predict_latency: bool | None = Field(None, strict=True, description="be true, false or unset")
    # prune only when the predicted latency exceeds the budget by more than this share
    latency_margin: float = number(0.2, positive=False)
    precision: tuple[str, ...] = ()  # e.g. ("fp32", "int8"): a per-slot precision searched with the architecture
    max_params: int = count(ArchitectureLimits.max_params)  # an architecture with more is refused before it is built
    max_activation_mb: float = number(ArchitectureLimits.max_activation_mb)  # fp32 slot outputs of one sample, summed
    trial_timeout_s: float | None = number(None)  # one evaluation's wall-clock limit; None: from epochs and data size
    trial_memory_mb: float | None = number(None)  # one evaluation's memory limit; None: the machine's, shared
    benchmark: str | None = text(None)  # a published table (NB201 CSV) that answers every evaluation by lookup
    metric: str | None = text(None)  # with a benchmark: its accuracy column (e.g. cifar10_test)
    latency_column: str | None = text(None)  # with a benchmark: its latency column or device (e.g. raspi4)
    # the search's wall-clock limit (YAML ``time_budget: 2h``, CLI ``--time-budget 2h``); None: unbounded
    time_budget_s: float | None = Field(None, validation_alias=AliasChoices("time_budget_s", "time_budget"))

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any) -> tuple[Objective, ...]:
        return tuple(_objective(o) for o in _items("objectives", value))

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraints(cls, value: Any) -> tuple[Constraint, ...]:
        return tuple(_constraint(c) for c in _items("constraints", value))

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, tuple | list) or any(
            p not in PRECISIONS for p in value
        ) or len(set(value)) != len(value):
            raise SpecError(f"precision must be distinct values among {list(PRECISIONS)}, got {value!r}")
        return tuple(value)

    @field_validator("time_budget_s", mode="before")
    @classmethod
    def _time_budget(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device_name(value, "device")

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, value: str) -> str:
        if value not in RECIPES:
            raise SpecError(f"unknown recipe {value!r}; known: {', '.join(RECIPES)}")
        return value

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler(cls, value: Any) -> str | None:
        if value is not None:
            SCHEDULERS.get(value)
        return value

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and value != int(value):
            raise SpecError(f"gpus_per_trial must {GPU_SHARE}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _agree(self) -> RunSpec:
        """The checks that span fields, once each field is valid."""
        supernet = supernet_strategies()
        if self.supernets != 1 and self.strategy not in supernet:
            needs = " or ".join(repr(name) for name in supernet)
            raise SpecError(f"supernets={self.supernets} needs strategy {needs}, not {self.strategy!r}")
        if self.strategy in supernet and self.scheduler is not None:
            raise SpecError(f"strategy {self.strategy!r} scores candidates on a supernet; it runs without a scheduler")
        if self.gpus_per_trial and self.device == "cpu":
            raise SpecError(f"gpus_per_trial={self.gpus_per_trial} with device 'cpu': give device auto or cuda")
        if self.precision and self.precision != ("fp32",) and self.target != "cpu-ort":
            raise SpecError(f"a per-slot precision is measured on target 'cpu-ort', not {self.target!r}")
        if self.precision and self.strategy in supernet:
            raise SpecError(f"strategy {self.strategy!r} scores candidates on an fp32 supernet: "
                            "it cannot search a precision")
        self._check_benchmark()
        names = [o.name for o in self.objectives]
        if not names or len(set(names)) != len(names):
            raise SpecError(f"objectives must be distinct and at least one, got {names}")
        for c in self.constraints:
            if c.bound <= 0 and c.name in ("latency_ms", "size_mb", "params", "macs"):
                raise SpecError(f"constraint {c}: the bound on {c.name} must be positive")
        return self

    def limits(self) -> ArchitectureLimits:
        """The ceilings every architecture of the study is checked against before it is built."""
        return ArchitectureLimits(self.max_params, self.max_activation_mb)

    def _check_benchmark(self) -> None:
        if self.benchmark is None:
            if self.metric is not None or self.latency_column is not None:
                raise SpecError("metric and latency_column name columns of a benchmark table: give benchmark too")
            return
        if self.metric is None:
            raise SpecError(f"benchmark {self.benchmark!r} needs metric: the table column that gives accuracy")
        if self.strategy in supernet_strategies() or self.scheduler is not None or self.precision:
            raise SpecError("a benchmark table answers evaluations by lookup: no supernet-scored strategy, "
                            "scheduler or precision")
        if self.latency_column is None and any(c.name == "latency_ms" for c in self.constraints):
            raise SpecError(f"benchmark {self.benchmark!r} with a latency budget needs latency_column: the device "
                            "whose latency column answers latency_ms")

    def trial_cpus(self) -> float:
        """The CPUs each evaluation is given: as set, else every core with one local worker, else 1."""
        if self.cpus_per_trial is not None:
            return self.cpus_per_trial
        return float(available_cpus()) if self.workers == 1 and self.ray_address is None else 1.0

    def trial_gpus(self) -> float:
        """The share of a GPU each evaluation is given: as set, else 1/workers when training runs on CUDA here."""
        if self.gpus_per_trial is not None:
            return float(self.gpus_per_trial)
        return 1.0 / self.workers if resolve_device(self.device).type == "cuda" else 0.0

    def latency_budget(self) -> float | None:
        """The tightest ``latency_ms <= X`` bound, if any."""
        bounds = [c.bound for c in self.constraints if c.name == "latency_ms" and c.op == "<="]
        return min(bounds) if bounds else None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objectives"] = [o.to_json() for o in self.objectives]
        data["constraints"] = [c.to_json() for c in self.constraints]
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "run spec") -> RunSpec:
        """Validate a plain mapping (from YAML or JSON); errors name ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
        odd = next((key for key in data if not isinstance(key, str)), None)
        if odd is not None:
            raise SpecError(f"{where}: unknown field {odd!r}; fields: {', '.join(sorted(cls.__pydantic_fields__))}")
        try:
            return cls(**data)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunSpec:
        path = Path(path)
        try:
            data = safe_load_bounded(path.read_text(), str(path))
        except OSError as exc:
            raise SpecError(f"{path}: cannot read run spec: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SpecError(f"{path}: not a text file") from None
        except RecursionError:
            raise SpecError(f"{path}: nested too deeply") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise SpecError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        return cls.from_mapping(data, where=str(path))


def parse_duration(value: Any) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1h30m`` or a bare number (seconds): the one reading of a time budget."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match and any(match.groups()):
            hours, minutes, secs, bare = (float(g) if g else 0.0 for g in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs + bare
    if seconds is None or not 0 < seconds < math.inf:
        raise SpecError(f"time_budget must be a positive duration such as 90s, 30m, 2h or 1h30m, got {value!r}")
    return seconds


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?|(\d+(?:\.\d+)?)")


def _items(name: str, value: Any) -> list[Any] | tuple[Any, ...]:
    """``value`` as the list a run spec gives for ``name``."""
    if not isinstance(value, list | tuple):
        raise SpecError(f"{name} must be a list, got {value!r}")
    return value


def _objective(item: Any) -> Objective:
    """``"accuracy:maximize"`` or ``{name: accuracy, direction: maximize}``."""
    if isinstance(item, Objective):
        return item
    if isinstance(item, str):
        name, _, direction = item.partition(":")
        item = {"name": name, "direction": direction or "minimize"}
    try:
        return Objective(str(item["name"]), Direction(item["direction"]))
    except (KeyError, ValueError, TypeError):
        raise SpecError(f"objective {item!r} must be 'name:maximize' or 'name:minimize'") from None


def _constraint(item: Any) -> Constraint:
    """``"latency_ms<=2"`` or ``{name: latency_ms, op: "<=", bound: 2}``."""
    if isinstance(item, Constraint):
        return item
    if isinstance(item, str):
        return Constraint.parse(item)
    try:
        return Constraint(str(item["name"]), str(item["op"]), float(item["bound"]))
    except (KeyError, ValueError, TypeError):
        raise SpecError(f"constraint {item!r} must be 'name<=number' or a mapping of name, op, bound") from None
