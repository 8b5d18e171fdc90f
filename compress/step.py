"""Compression steps: ``(model, context) -> (model, StepReport)``, a registry of them, and the context they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from archetype.compress.fine_tune import FineTuneConfig, FineTuneReport, TeacherCache, fine_tune, fine_tune_recipe
from archetype.errors import SpecError
from archetype.registry import Registry
from archetype.runtime.data import Dataset
from archetype.runtime.measure import SideBySide
from archetype.runtime.targets import Target
from archetype.runtime.training import TrainConfig, evaluate_accuracy
from archetype.searchspace.network import model_size_mb
from archetype.searchspace.types import TensorType
from archetype.validation import checked, number

ConfigType = TypeVar("ConfigType")


@checked(frozen=True, option_names=True)
class Budget:
    """What the compressed model must meet on the target: a latency in ms, or a speedup over the source.

    A speedup is judged by side-by-side timing, so a machine whose speed drifts during the run does not move it.
    Each step gets the speedup still needed over the model it is given, with that in ms from the model's last
    timing; a step that times its input itself takes its limit from its own timing (``limit_ms_for``).
    """

    latency_ms: float | None = number(None, requirement="be a positive number of milliseconds")
    max_size_mb: float | None = number(None, requirement="be a positive number of megabytes")
    # percentage points below the source model's test accuracy
    max_accuracy_drop: float = number(1.0, positive=False, requirement="be a non-negative number of percentage points")
    speedup: float | None = number(None, requirement="be a positive number of times faster than the source")

    def __post_init__(self) -> None:
        if self.latency_ms is None and self.speedup is None:
            raise SpecError("give a latency budget: --latency-ms MS or --speedup X")

    def met_by(self, metrics: ModelMetrics, speedup: float | None = None) -> bool:
        """Whether ``metrics`` meet the latency (or ``speedup``, over the source side by side) and size limits;
        accuracy is checked step by step."""
        size_ok = self.max_size_mb is None or metrics.size_mb <= self.max_size_mb
        if self.speedup is not None:
            return speedup is not None and speedup >= self.speedup and size_ok
        return metrics.latency_ms <= self.limit_ms and size_ok

    @property
    def limit_ms(self) -> float:
        """The latency limit in ms (for a speedup, its estimate from the last timing: steps get one)."""
        if self.latency_ms is None:
            raise SpecError(f"a {self.speedup:g}x speedup budget has no latency in ms before the source is measured")
        return self.latency_ms

    def limit_ms_for(self, input_ms: float) -> float:
        """The latency limit for the model given to a step that timed it at ``input_ms`` itself: the speedup still
        needed applied to that, so that the limit and what is held to it are timed alike; else ``limit_ms``."""
        return input_ms / self.speedup if self.speedup is not None else self.limit_ms

    def for_step(self, current_ms: float, speedup: float) -> Budget:
        """The budget of a step given a model last timed at ``current_ms``, ``speedup`` times faster than the source
        so far: the speedup still needed (and its ms); a latency budget as it is."""
        if self.speedup is None:
            return self
        needed = self.speedup / speedup
        return Budget(current_ms / needed, self.max_size_mb, self.max_accuracy_drop, needed)

    def describe(self) -> str:
        """``0.5 ms`` or ``4x faster than the source``."""
        return f"{self.latency_ms:g} ms" if self.speedup is None else f"{self.speedup:g}x faster than the source"

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "speedup": self.speedup, "max_size_mb": self.max_size_mb,
                "max_accuracy_drop": self.max_accuracy_drop}


@dataclass(frozen=True)
class ModelMetrics:
    """A model as measured: latency on the target, size, parameters, MACs, test accuracy."""

    latency_ms: float
    latency_spread: float
    size_mb: float
    params: int
    macs: int
    accuracy: float

    def to_json(self) -> dict[str, float]:
        return {"latency_ms": self.latency_ms, "latency_spread": self.latency_spread, "size_mb": self.size_mb,
                "params": float(self.params), "macs": float(self.macs), "accuracy": self.accuracy}


@dataclass
class StepReport:
    """What a step did: its settings and findings (``details``), and a one-line ``message`` for the user."""

    name: str
    details: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


@dataclass
class CompressionContext:
    """What every step may use: the target, the data, the budget, the fine-tuning recipe."""

    target: Target
    dataset: Dataset
    budget: Budget
    fine_tune: TrainConfig = field(default_factory=fine_tune_recipe)
    settings: dict[str, Any] = field(default_factory=dict)  # step name -> that step's config dataclass
    seed: int = 0
    teacher: nn.Module | None = None  # the source model, distilled from in every fine-tune (set by the pipeline)
    progress: Callable[[str], None] | None = None  # one line of what is happening now, for the user
    _runners: dict[int, tuple[nn.Module, Callable[[], object]]] = field(default_factory=dict, repr=False)
    _teacher_logits: TeacherCache = field(default_factory=dict, repr=False)

    def config(self, step: str, default: ConfigType) -> ConfigType:
        """The config of ``step`` given in ``settings``, else ``default``."""
        return self.settings.get(step, default)

    def say(self, text: str) -> None:
        """Tell the user what is happening now (a fine-tune epoch, candidates scored)."""
        if self.progress is not None:
            self.progress(text)

    def fine_tune_model(self, model: nn.Module, step: str, longer: int = 1,
                        give_up_below: float | None = None) -> FineTuneReport:
        """Fine-tune ``model`` in place after ``step``: distilled from the teacher, on a subset, early-stopped;
        ``longer`` times the epochs and the patience (a repair); stopped at once below ``give_up_below``."""
        config = self.config("fine_tune", FineTuneConfig())
        recipe = self.fine_tune
        if longer > 1:
            recipe = replace(recipe, epochs=recipe.epochs * longer)
            config = replace(config, patience=config.patience * longer)
        report = fine_tune(model, self.dataset, recipe, config, self.teacher,
                           lambda e, n, a: self.say(f"{step}: fine-tune epoch {e}/{n}, validation accuracy {a:.4f}"),
                           give_up_below, self._teacher_logits)
        if report.gave_up:
            self.say(f"{step}: fine-tune stopped after epoch {report.epochs}: validation accuracy "
                     f"{report.val_accuracy[-1]:.4f} is below {give_up_below:.4f}, beyond repair")
        return report

    @property
    def input_type(self) -> TensorType:
        return self.dataset.input_type

    def example(self) -> torch.Tensor:
        """A batch of one real training sample, the shape every export and measurement uses."""
        return self.dataset.train.x[:1]

    def latency_ms(self, model: nn.Module) -> float:
        """The model's median latency on the target, in ms."""
        return measure_on_target(self.target, model, self.input_type)[0]

    def side_by_side(self, first: nn.Module, second: nn.Module, rounds: int = 15) -> SideBySide:
        """Two models timed on the target in alternating blocks: the honest ratio of their latencies."""
        return self.target.compare(self._runner(first), self._runner(second), rounds)

    def _runner(self, model: nn.Module) -> Callable[[], object]:
        """The model's runner on the target, made once per model (an export each time otherwise)."""
        cached = self._runners.get(id(model))
        if cached is None or cached[0] is not model:
            cached = self._runners[id(model)] = (model, runner_on_target(self.target, model, self.input_type))
        return cached[1]

    def measure(self, model: nn.Module, latency: tuple[float, float] | None = None) -> ModelMetrics:
        """Latency on the target (unless given as ``(median_ms, spread)``), size, parameters, MACs, test accuracy."""
        median, spread = latency if latency is not None else measure_on_target(self.target, model, self.input_type)
        params, macs = count_params_and_macs(model, self.example())
        accuracy = evaluate_accuracy(model, self.dataset.test)
        return ModelMetrics(median, spread, deployed_size_mb(model), params, macs, accuracy)


class DeployedModel(nn.Module):
    """An int8 model bound to its deployment runtime; keeps the PyTorch module it came from as ``fp32_model``."""

    fp32_model: nn.Module | None

    def deployed_size_mb(self) -> float:
        """The size of what is deployed, in MB."""
        raise NotImplementedError

    def measure_on(self, target: Target, input_type: TensorType) -> tuple[float, float]:
        """``(median_ms, spread)`` on ``target``; SpecError if it cannot run there."""
        raise NotImplementedError

    def counts(self) -> tuple[int, int]:
        """Parameters and MACs (of the fp32 network it computes)."""
        raise NotImplementedError

    def runner_on(self, target: Target, input_type: TensorType) -> Callable[[], object]:
        """One forward pass on ``target``, ready to be timed; SpecError if it cannot run there."""
        raise NotImplementedError

    def save_deployment(self, folder: Path, example: torch.Tensor) -> list[str]:
        """Write the deployable files into ``folder``; returns their names."""
        raise NotImplementedError


def measure_on_target(target: Target, model: nn.Module, input_type: TensorType) -> tuple[float, float]:
    """``(median_ms, spread)`` of ``model`` on ``target``, with the one protocol."""
    if isinstance(model, DeployedModel):
        return model.measure_on(target, input_type)
    latency = target.measure(model.eval(), input_type)
    return latency.median_ms, latency.spread


def runner_on_target(target: Target, model: nn.Module, input_type: TensorType) -> Callable[[], object]:
    """One forward pass of ``model`` (deployed or not) on ``target``, ready to be timed."""
    if isinstance(model, DeployedModel):
        return model.runner_on(target, input_type)
    return target.runner(model.eval(), input_type)


def deployed_size_mb(model: nn.Module) -> float:
    """The size of what is deployed, in MB: the deployed file of a quantized model, else the parameters and buffers."""
    if isinstance(model, DeployedModel):
        return model.deployed_size_mb()
    return model_size_mb(model)


def count_params_and_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Parameters and multiply-accumulates of one forward pass on ``example`` (torch's FLOP counter / 2)."""
    if isinstance(model, DeployedModel):
        return model.counts()
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


Step = Callable[[nn.Module, CompressionContext], tuple[nn.Module, StepReport]]
StepFunction = TypeVar("StepFunction", bound=Step)


def _load_builtin_steps() -> None:
    import archetype.compress.depth_step
    import archetype.compress.joint_policy
    import archetype.compress.pruning
    import archetype.compress.quantization
    import archetype.compress.tucker  # noqa: F401


STEPS: Registry[Step] = Registry("step", load=_load_builtin_steps)
"""Every compression step by name (``--pipeline``); the built-in ones are imported on the first look-up."""


def register_step(name: str) -> Callable[[StepFunction], StepFunction]:
    """Register a compression step under ``name`` (a name of ``--pipeline``)."""

    def decorate(step: StepFunction) -> StepFunction:
        STEPS.add(name, step)
        return step

    return decorate


def list_steps() -> list[str]:
    """The registered step names."""
    return STEPS.names()


def get_step(name: str) -> Step:
    """The step called ``name``; SpecError naming the known ones otherwise."""
    try:
        return STEPS.get(name)
    except SpecError as exc:
        raise SpecError(f"--pipeline: {exc}") from None


def timed(step: Step, model: nn.Module, context: CompressionContext) -> tuple[nn.Module, StepReport, float]:
    """Run ``step`` and return its model, report and wall time in seconds."""
    start = time.perf_counter()
    model, report = step(model, context)
    return model, report, time.perf_counter() - start
