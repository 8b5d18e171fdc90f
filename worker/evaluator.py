"""Evaluators: turn an architecture into a Result (accuracy, latency, size) and never raise."""

from __future__ import annotations

import dataclasses
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch

from archetype.errors import SpecError
from archetype.objectives import Constraint
from archetype.result import Result, TrialState, megabytes
from archetype.runtime.data import load_dataset
from archetype.runtime.measure import MeasureProtocol
from archetype.runtime.targets import get_target
from archetype.runtime.training import TrainConfig, evaluate_accuracy, torch_threads
from archetype.runtime.training import train as train_model
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.bounds import ArchitectureLimits
from archetype.searchspace.network import model_size_mb
from archetype.validation import checked, count

PRE_TRAINING_VALUES = ("params", "macs", "size_mb", "latency_ms", "latency_spread")


@checked(frozen=True, subject="budget")
class Budget:
    """How much work one evaluation may spend."""

    epochs: int = count(..., minimum=0)  # training epochs


EpochReport = Callable[[int, Result], None]
"""Called after each training epoch with the result so far (an early stopper may end the trial there)."""


class Evaluator(ABC):
    """Measures one architecture under a budget; failures come back as FAILED results, not exceptions."""

    runs_inline: ClassVar[bool] = False
    """True for a lookup that is faster in the driver's process than anywhere it could be sent."""

    @abstractmethod
    def evaluate(self, arch: Architecture, budget: Budget, on_epoch: EpochReport | None = None) -> Result:
        """The measured values of ``arch``, with its state, error text and timings.

        Evaluators that train call ``on_epoch`` after each epoch; others may ignore it.
        """


class TrainingEvaluator(Evaluator):
    """Measures size and latency on ``target``, then trains on ``dataset`` and scores validation accuracy.

    Holds only names and settings, so it pickles small and ships to Ray
    workers; each process loads the data set once and builds the target on use.
    Constraints on values known before training (params, macs, size_mb,
    latency_ms) prune an architecture that breaks them without training it.
    The target measures on ``threads`` threads with ``protocol``; training
    follows ``train`` (its epochs come from the budget).
    """

    def __init__(
        self,
        dataset: str = "digits",
        target: str = "cpu-ort",
        constraints: tuple[Constraint, ...] = (),
        seed: int = 0,
        train: TrainConfig | None = None,
        threads: int = 1,
        protocol: MeasureProtocol | None = None,
        limits: ArchitectureLimits | None = None,
    ) -> None:
        self.dataset = dataset
        self.target = target
        self.constraints = tuple(constraints)
        self.seed = seed
        self.train = train or TrainConfig(seed=seed)
        self.threads = threads  # the target's threads; training uses train.threads
        self.protocol = protocol or MeasureProtocol()
        self.limits = limits or ArchitectureLimits()  # checked by formula before anything is built

    def __repr__(self) -> str:
        return (
            f"TrainingEvaluator(dataset={self.dataset!r}, target={self.target!r}, "
            f"constraints={tuple(str(c) for c in self.constraints)}, seed={self.seed}, train={self.train}, "
            f"threads={self.threads}, protocol={self.protocol}, limits={self.limits})"
        )

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch: EpochReport | None = None) -> Result:
        start = time.perf_counter()
        result = Result(TrialState.RUNNING, target=self.target)
        try:
            self._evaluate(arch, budget, result, on_epoch)
        except Exception as exc:
            result.state = TrialState.FAILED
            result.error = describe_exception(exc)
        finally:
            result.timings["total_s"] = time.perf_counter() - start
        return result

    def _evaluate(self, arch: Architecture, budget: Budget, result: Result, on_epoch: EpochReport | None) -> None:
        """Fill ``result`` in place, so that whatever was measured survives a later failure."""
        values, timings = result.values, result.timings
        data = load_dataset(self.dataset, self.seed)
        if arch.input != data.input_type:
            raise SpecError(f"the architecture takes {arch.input} but data set {self.dataset!r} has {data.input_type}")

        self.limits.check_architecture(arch)
        phase = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = arch.build()
        output = getattr(model, "output_type", None)
        if output is not None and output.dims() != (data.num_classes,):
            raise SpecError(
                f"the architecture outputs {output} but data set {self.dataset!r} has {data.num_classes} classes"
            )
        values["params"] = float(arch.params())
        values["macs"] = float(arch.macs())
        values["size_mb"] = model_size_mb(model) - megabytes(3 * _int8_params(arch))  # an int8 weight: 1 byte, not 4
        timings["build_s"] = time.perf_counter() - phase

        phase = time.perf_counter()
        target = get_target(self.target, threads=self.threads, protocol=self.protocol)
        result.fingerprint = target.fingerprint()
        if arch.int8_slots():
            from archetype.worker import precision

            precision.check_precision_target(arch, target)
            latency = precision.mixed_latency(model, arch, target, data.train)  # type: ignore[arg-type]
        else:
            latency = target.measure(model, arch.input)
        values["latency_ms"] = latency.median_ms
        values["latency_spread"] = latency.spread
        timings["measure_s"] = time.perf_counter() - phase

        broken = [c for c in self.constraints if c.name in PRE_TRAINING_VALUES and not c.satisfied(values)]
        if broken:
            result.state = TrialState.PRUNED
            result.error = "; ".join(_describe_violation(c, values[c.name]) for c in broken) + ": not trained"
            return

        phase = time.perf_counter()
        config = dataclasses.replace(self.train, epochs=budget.epochs)

        def report_epoch(epoch: int, loss: float) -> None:
            with torch_threads(config.threads):
                accuracy = evaluate_accuracy(model, data.val)
            so_far = dataclasses.replace(result, state=TrialState.PRUNED, values={**values, "accuracy": accuracy},
                                         error=f"stopped early after epoch {epoch} of {config.epochs}")
            so_far.values["train_loss"] = loss
            on_epoch(epoch, so_far)

        report = train_model(model, data, config, on_epoch=None if on_epoch is None else report_epoch)
        timings["train_s"] = time.perf_counter() - phase
        timings["train_data_s"] = report.data_seconds  # the share of training spent fetching and augmenting batches
        if report.losses:
            values["train_loss"] = report.losses[-1]
        with torch_threads(config.threads):
            values["accuracy"] = evaluate_accuracy(model, data.val)
            values["test_accuracy"] = evaluate_accuracy(model, data.test)
            if arch.int8_slots():
                from archetype.worker.precision import mixed_accuracy

                values["accuracy_fp32"] = values["accuracy"]
                values["accuracy"], values["test_accuracy"] = mixed_accuracy(model, arch, data.train, data.val,
                                                                             data.test)
        result.state = TrialState.COMPLETE


def _int8_params(arch: Architecture) -> int:
    """The parameters of the slots that run int8."""
    int8 = set(arch.int8_slots())
    return sum(t.params for t in arch.typing() if t.slot in int8) if int8 else 0


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message (at file.py:line in function)`` for a result's error text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


def _describe_violation(constraint: Constraint, value: float) -> str:
    if constraint.op == "<=":
        return f"{constraint.name} {value:.3g} > budget {constraint.bound:g}"
    return f"{constraint.name} {value:.3g} < bound {constraint.bound:g}"
