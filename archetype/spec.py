"""RunSpec: everything a search needs, validated once at the edge (CLI flags or a YAML file)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from archetype.errors import SpecError
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint, Direction, Objective
from archetype.runtime.devices import available_cpus, check_device_name, resolve_device
from archetype.runtime.training import RECIPES
from archetype.searchspace.bounds import ArchitectureLimits
from archetype.searchspace.operator import PRECISIONS
from archetype.searchspace.yaml_space import safe_load_bounded

CEILINGS = {"trials": 1_000_000, "epochs": 10_000, "workers": 4096, "supernets": 64, "finalists": 10_000}
"""The largest counts a run spec may ask for: more is a typo, not a search."""

SCHEDULERS = (None, "asha")
"""Early stoppers a search may run under; None trains every candidate for all its epochs."""


@dataclass(frozen=True)
class RunSpec:
    """A latency-constrained search: what to search, on which data and target, under which budget."""

    space: str  # a predefined space name or a .yaml file
    data: str = "digits"  # digits | mnist | npz:PATH | folder:PATH | cifar10:PATH | cifar100:PATH
    target: str = "cpu-ort"  # where latency is measured
    strategy: str = "random"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    constraints: tuple[Constraint, ...] = ()
    trials: int = 20  # evaluations in the study
    epochs: int = 5  # training epochs per evaluation
    seed: int = 0  # fixes the data split, the strategy and the weight initialisation
    workers: int = 1  # evaluations at once; more than one shares the cores and makes latency noisier
    cpus_per_trial: float | None = None  # None: every core with one local worker, else 1
    gpus_per_trial: float | None = None  # None: a 1/workers share of a GPU when training runs on CUDA, else 0
    device: str = "auto"  # where candidates train: auto (CUDA when present), cpu, cuda, cuda:N
    recipe: str = "quick"  # the training preset of each candidate (archetype.runtime.training.RECIPES)
    study: str | None = None  # default: "<space>-<n>"
    ray_address: str | None = None  # None: a local Ray runtime
    retries: int = 2  # runs again of an evaluation whose worker was lost, before it is stored as failed
    scheduler: str | None = None  # "asha": run through Ray Tune and stop weak candidates early on epochs
    supernets: int = 1  # strategy "oneshot": supernets trained (K > 1: a balanced mixture)
    supernet_epochs: int | None = None  # strategy "oneshot": supernet training epochs (default 4 x epochs)
    finalists: int = 3  # strategy "oneshot": best scored candidates then trained from scratch and measured
    predict_latency: bool | None = None  # prune on predicted latency; None: when a latency table covers the space
    latency_margin: float = 0.2  # prune only when the predicted latency exceeds the budget by more than this share
    precision: tuple[str, ...] = ()  # e.g. ("fp32", "int8"): a per-slot precision searched with the architecture
    max_params: int = ArchitectureLimits.max_params  # an architecture with more is refused before it is built
    max_activation_mb: float = ArchitectureLimits.max_activation_mb  # fp32 slot outputs of one sample, summed
    trial_timeout_s: float | None = None  # one evaluation's wall-clock limit; None: derived from epochs and data size
    trial_memory_mb: float | None = None  # one evaluation's memory limit; None: the machine's memory shared by workers
    benchmark: str | None = None  # a published table (NB201 CSV) that answers every evaluation instead of training
    metric: str | None = None  # with a benchmark: its accuracy column (e.g. cifar10_test)
    latency_column: str | None = None  # with a benchmark: its latency column or device (e.g. raspi4)

    def __post_init__(self) -> None:
        for name in ("space", "data", "target", "strategy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("study", "ray_address"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SpecError(f"{name} must be a non-empty string, got {value!r}")
        for name in ("trials", "epochs", "workers", "supernets", "finalists"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive integer, got {value!r}")
            if value > CEILINGS[name]:
                raise SpecError(f"{name} must be at most {CEILINGS[name]:,}, got {value:,}")
        self.limits()
        for name in ("trial_timeout_s", "trial_memory_mb"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 < value < math.inf):
                raise SpecError(f"{name} must be a positive number, got {value!r}")
        epochs = self.supernet_epochs
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise SpecError(f"supernet_epochs must be a positive integer, got {epochs!r}")
        if self.supernets != 1 and self.strategy != "oneshot":
            raise SpecError(f"supernets={self.supernets} needs strategy 'oneshot', not {self.strategy!r}")
        if self.strategy == "oneshot" and self.scheduler is not None:
            raise SpecError("strategy 'oneshot' scores candidates on a supernet; it runs without a scheduler")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise SpecError(f"seed must be an integer from 0 to 2**63-1, got {self.seed!r}")
        if self.scheduler not in SCHEDULERS:
            raise SpecError(f"unknown scheduler {self.scheduler!r}; known: {', '.join(s for s in SCHEDULERS if s)}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 100:
            raise SpecError(f"retries must be a non-negative integer of at most 100, got {self.retries!r}")
        if self.predict_latency not in (None, True, False):
            raise SpecError(f"predict_latency must be true, false or unset, got {self.predict_latency!r}")
        margin = self.latency_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < math.inf:
            raise SpecError(f"latency_margin must be a non-negative number, got {self.latency_margin!r}")
        cpus = self.cpus_per_trial
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float)
                                 or not 0 < cpus < math.inf):
            raise SpecError(f"cpus_per_trial must be a positive number, got {self.cpus_per_trial!r}")
        gpus = self.gpus_per_trial
        if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int | float) or not 0 <= gpus < math.inf
                                 or (gpus > 1 and gpus != int(gpus))):
            raise SpecError(f"gpus_per_trial must be a share of one GPU (0 to 1) or a whole number, got {gpus!r}")
        check_device_name(self.device, "device")
        if gpus and self.device == "cpu":
            raise SpecError(f"gpus_per_trial={gpus} with device 'cpu': give device auto or cuda")
        if self.recipe not in RECIPES:
            raise SpecError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        if not isinstance(self.strategy_options, Mapping) or not all(
            isinstance(k, str) for k in self.strategy_options
        ):
            raise SpecError(f"strategy_options must map option names to values, got {self.strategy_options!r}")
        if isinstance(self.precision, str) or not isinstance(self.precision, tuple | list) or any(
            p not in PRECISIONS for p in self.precision
        ) or len(set(self.precision)) != len(self.precision):
            raise SpecError(f"precision must be distinct values among {list(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "precision", tuple(self.precision))
        if self.precision and self.precision != ("fp32",) and self.target != "cpu-ort":
            raise SpecError(f"a per-slot precision is measured on target 'cpu-ort', not {self.target!r}")
        if self.precision and self.strategy == "oneshot":
            raise SpecError("strategy 'oneshot' scores candidates on an fp32 supernet: it cannot search a precision")
        self._check_benchmark()
        names = [o.name for o in self.objectives]
        if not names or len(set(names)) != len(names):
            raise SpecError(f"objectives must be distinct and at least one, got {names}")
        for c in self.constraints:
            if c.bound <= 0 and c.name in ("latency_ms", "size_mb", "params", "macs"):
                raise SpecError(f"constraint {c}: the bound on {c.name} must be positive")

    def limits(self) -> ArchitectureLimits:
        """The ceilings every architecture of the study is checked against before it is built."""
        return ArchitectureLimits(self.max_params, self.max_activation_mb)

    def _check_benchmark(self) -> None:
        for name in ("benchmark", "metric", "latency_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SpecError(f"{name} must be a non-empty string, got {value!r}")
        if self.benchmark is None:
            if self.metric is not None or self.latency_column is not None:
                raise SpecError("metric and latency_column name columns of a benchmark table: give benchmark too")
            return
        if self.metric is None:
            raise SpecError(f"benchmark {self.benchmark!r} needs metric: the table column that gives accuracy")
        if self.strategy == "oneshot" or self.scheduler is not None or self.precision:
            raise SpecError("a benchmark table answers evaluations by lookup: no oneshot strategy, scheduler or "
                            "precision")
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
        if "space" not in data:
            raise SpecError(f"{where}: field 'space' is required")
        values = dict(data)
        try:
            if "objectives" in values:
                values["objectives"] = tuple(_objective(o) for o in values["objectives"])
            if "constraints" in values:
                values["constraints"] = tuple(_constraint(c) for c in values["constraints"])
            return cls(**values)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
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


def _objective(item: Any) -> Objective:
    """``"accuracy:maximize"`` or ``{name: accuracy, direction: maximize}``."""
    if isinstance(item, str):
        name, _, direction = item.partition(":")
        item = {"name": name, "direction": direction or "minimize"}
    try:
        return Objective(str(item["name"]), Direction(item["direction"]))
    except (KeyError, ValueError, TypeError):
        raise SpecError(f"objective {item!r} must be 'name:maximize' or 'name:minimize'") from None


def _constraint(item: Any) -> Constraint:
    """``"latency_ms<=2"`` or ``{name: latency_ms, op: "<=", bound: 2}``."""
    if isinstance(item, str):
        return Constraint.parse(item)
    try:
        return Constraint(str(item["name"]), str(item["op"]), float(item["bound"]))
    except (KeyError, ValueError, TypeError):
        raise SpecError(f"constraint {item!r} must be 'name<=number' or a mapping of name, op, bound") from None
