"""The compression pipeline: run steps in order, measure each result, keep the ones that pay, store everything.

A step is kept when the model it returns is faster on the target by more than
``min_gain`` (or smaller while a size limit is unmet) and the accuracy drop from
the source stays within the budget; otherwise it is rejected, and said so. The
pipeline stops once the budget is met. A speedup budget is judged by side-by-side
ratios (the kept steps' multiplied while running, the source's and the result's
to decide), and each step gets the speedup still needed over the model it is
given. ``--out`` is built in a temporary folder next to it and renamed into place
at the end, so it holds a whole result or nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archetype.compress.step import (
    CompressionContext,
    DeployedModel,
    ModelMetrics,
    get_step,
    timed,
)
from archetype.errors import ArchetypeError, SpecError
from archetype.runtime.data import Dataset
from archetype.runtime.measure import SideBySide
from archetype.runtime.onnx_export import export_onnx

FORMAT_VERSION = 1


@dataclass
class StepOutcome:
    """One step as run: its report, the model it returned as measured, and whether it was kept."""

    name: str
    accepted: bool
    metrics: ModelMetrics | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    speedup: float | None = None  # over the model the step was given: side by side where the target allows


@dataclass
class CompressionResult:
    """A finished pipeline: the source and each step measured, the model kept, and whether the budget is met."""

    name: str | None
    status: str  # complete (budget met) or unmet (the best reached is kept)
    source: ModelMetrics
    steps: list[StepOutcome]
    model: nn.Module
    metrics: ModelMetrics
    already_met: bool = False
    out_dir: Path | None = None
    side_by_side: SideBySide | None = None  # the source and the result timed in alternating blocks at the end

    @property
    def speedup(self) -> float:
        """Source latency over the result's: from the side-by-side timing when there is one."""
        if self.side_by_side is not None:
            return self.side_by_side.ratio
        return self.source.latency_ms / self.metrics.latency_ms

    def to_json(self) -> dict[str, Any]:
        """The report: the budget verdict, the source, every step and the kept model's figures."""
        return {
            "version": FORMAT_VERSION, "run": self.name, "status": self.status, "already_met": self.already_met,
            "source": self.source.to_json(), "final": self.metrics.to_json(),
            "speedup": self.speedup,
            "side_by_side": self.side_by_side.to_json() if self.side_by_side is not None else None,
            "accuracy_drop_pp": 100 * (self.source.accuracy - self.metrics.accuracy),
            "steps": [{"name": s.name, "accepted": s.accepted, "message": s.message, "seconds": s.seconds,
                       "speedup": s.speedup,
                       "metrics": s.metrics.to_json() if s.metrics else None, "details": s.details}
                      for s in self.steps],
            "out_dir": str(self.out_dir) if self.out_dir else None,
        }


OnStep = Callable[[str, StepOutcome | None], None]
"""``on_step(name, None)`` when a step starts, ``on_step(name, outcome)`` when it ends."""


def check_data_fits(model: nn.Module, dataset: Dataset) -> None:
    """SpecError unless ``model`` takes the data set's samples and returns one score per class."""
    sample = dataset.train.x[:2]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            output = model(sample)
    except Exception as exc:
        raise SpecError(f"--data {dataset.name}: the model cannot take its samples of shape "
                        f"{tuple(sample.shape[1:])}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[1] < dataset.num_classes:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise SpecError(f"--data {dataset.name}: the model returns {shape} for a batch of 2, not (2, classes >= "
                        f"{dataset.num_classes})")


def check_out_dir(out: Path | None) -> None:
    """SpecError if ``--out`` exists and is not an empty folder (nothing there is ever overwritten)."""
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SpecError(f"--out {out}: already exists and is not an empty folder")


class CompressionPipeline:
    """Steps by name, run in order on a model within ``context``; results stored when a store is given."""

    def __init__(self, steps: Sequence[str], context: CompressionContext, min_gain: float = 0.02) -> None:
        if not steps:
            raise SpecError("--pipeline: give at least one step")
        self.names = list(steps)
        self.steps = [get_step(name) for name in self.names]  # unknown names fail before anything runs
        self.context = context
        self.min_gain = min_gain

    def run(
        self,
        model: nn.Module,
        *,
        store: Any = None,
        run_name: str | None = None,
        source: str = "model",
        source_trial: tuple[str, int] | None = None,
        out: Path | None = None,
        on_step: OnStep | None = None,
    ) -> CompressionResult:
        """Compress ``model`` (left unchanged); write ``out`` whole, store the run and its steps in ``store``."""
        context, budget = self.context, self.context.budget
        check_data_fits(model, context.dataset)
        check_out_dir(out)
        if store is not None:
            run_name = run_name or store.next_compression_name("compress")
            store.create_compression_run(run_name, source=source, target=context.target.name,
                                         budget=budget.to_json(), pipeline=self.names,
                                         source_trial=source_trial, out_dir=str(out) if out else None)
        try:
            result = self._run(model, store, run_name, on_step)
            if out is not None and not result.already_met:
                result.out_dir = write_output(result, context, out)
        except BaseException as exc:
            if store is not None:
                error = str(exc) if isinstance(exc, ArchetypeError) else traceback.format_exc(limit=3)
                store.finish_compression_run(run_name, "failed", error=error or type(exc).__name__)
            raise
        if store is not None:
            store.finish_compression_run(run_name, result.status, result.to_json())
        return result

    def _run(self, model: nn.Module, store: Any, run_name: str | None, on_step: OnStep | None) -> CompressionResult:
        context, budget = self.context, self.context.budget
        if context.teacher is None:
            context.teacher = model  # every fine-tune distils from the model as given
        if on_step:
            on_step("source", None)
        source = context.measure(model)
        first = StepOutcome("source", True, source, "the model as given")
        self._record(store, run_name, first, on_step)
        outcomes = [first]
        if budget.met_by(source, 1.0):
            return CompressionResult(run_name, "complete", source, outcomes, model, source, already_met=True)
        current, metrics, speedup = model, source, 1.0  # speedup: the kept steps' side-by-side ratios multiplied
        timing: SideBySide | None = None  # the source and ``current`` timed side by side, once they are
        try:
            for name, step in zip(self.names, self.steps):
                if on_step:
                    on_step(name, None)
                context.budget = budget.for_step(metrics.latency_ms, speedup)
                outcome, candidate = self._try(name, step, current, metrics, source)
                self._record(store, run_name, outcome, on_step)
                outcomes.append(outcome)
                if outcome.accepted and outcome.metrics is not None and outcome.speedup is not None:
                    current, metrics, speedup, timing = candidate, outcome.metrics, speedup * outcome.speedup, None
                    if budget.met_by(metrics, speedup) and budget.speedup is not None:
                        # the product carries each ratio's noise: the source and this model timed directly decide
                        timing = self._timed_against_source(model, current, on_step)
                        speedup = timing.ratio if timing is not None else speedup
                    if budget.met_by(metrics, speedup):
                        break
        finally:
            context.budget = budget
        if current is not model and timing is None:
            timing = self._timed_against_source(model, current, on_step)
        status = "complete" if budget.met_by(metrics, timing.ratio if timing is not None else speedup) else "unmet"
        return CompressionResult(run_name, status, source, outcomes, current, metrics, side_by_side=timing)

    def _timed_against_source(self, source: nn.Module, model: nn.Module, on_step: OnStep | None) -> SideBySide | None:
        """The source and ``model`` timed side by side (None where the target cannot hold two at once)."""
        if on_step:
            on_step("side-by-side timing", None)
        return _side_by_side(self.context, source, model)

    def _try(
        self, name: str, step: Any, model: nn.Module, current: ModelMetrics, source: ModelMetrics
    ) -> tuple[StepOutcome, nn.Module]:
        context, budget = self.context, self.context.budget
        try:
            candidate, report, seconds = timed(step, model, context)
            if candidate is model:
                return StepOutcome(name, False, None, report.message or "the step changed nothing",
                                   report.details, seconds), model
            context.say(f"{name}: timing the result side by side with the model before it")
            timing = _side_by_side(context, model, candidate)
            if timing is not None:  # both timed in alternating blocks: the machine's load drifts alike for both
                metrics = context.measure(candidate, (timing.second.median_ms, timing.second.spread))
                current_ms, ratio = timing.first.median_ms, timing.ratio
            else:
                metrics = context.measure(candidate)
                current_ms = min(context.latency_ms(model), current.latency_ms)
                ratio = current_ms / metrics.latency_ms
            faster = ratio > 1 / (1 - self.min_gain)
            drop = 100 * (source.accuracy - metrics.accuracy)
            if drop > budget.max_accuracy_drop and not isinstance(candidate, DeployedModel) and \
                    context.fine_tune.epochs > 0:  # repair before rejecting: fine-tune again, distilled
                repair = context.fine_tune_model(candidate, f"{name} (repair)").to_json()
                metrics = context.measure(candidate, (metrics.latency_ms, metrics.latency_spread))
                report.details["repair"] = {**repair, "drop_before_pp": drop}
                drop = 100 * (source.accuracy - metrics.accuracy)
                report.message = f"{report.message or name}; fine-tuned again to repair the accuracy"
        except Exception as exc:  # a step that cannot handle this model is reported, and the rest still run
            text = str(exc).splitlines()[0] if str(exc) else ""
            return StepOutcome(name, False, None, f"failed: {type(exc).__name__}: {text}"), model
        size_unmet = budget.max_size_mb is not None and current.size_mb > budget.max_size_mb
        smaller = size_unmet and metrics.size_mb < current.size_mb * (1 - self.min_gain)
        if drop > budget.max_accuracy_drop:
            verdict = f"rejected: accuracy drops {drop:.2f} pp from the source (at most {budget.max_accuracy_drop:g})"
        elif not (faster or smaller):
            verdict = (f"rejected: not faster on {context.target.name} ({metrics.latency_ms:.4f} ms vs "
                       f"{current_ms:.4f} ms)")
        else:
            verdict = "kept"
        message = f"{report.message}; {verdict}" if report.message else verdict
        return StepOutcome(name, verdict == "kept", metrics, message, report.details, seconds, ratio), candidate

    @staticmethod
    def _record(store: Any, run_name: str | None, outcome: StepOutcome, on_step: OnStep | None) -> None:
        if store is not None:
            store.add_compression_step(
                run_name, name=outcome.name, accepted=outcome.accepted,
                metrics=outcome.metrics.to_json() if outcome.metrics else {}, details=outcome.details,
                message=outcome.message, seconds=outcome.seconds,
            )
        if on_step:
            on_step(outcome.name, outcome)


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``torch.export`` of ``model`` with a free batch dimension, saved as ``.pt2`` (loads without pickled code)."""
    batch = torch.cat([example[:1], example[:1]])  # torch.export fixes a dimension of 1
    program = torch.export.export(model.eval(), (batch,), dynamic_shapes=({0: torch.export.Dim("batch", max=65536)},))
    torch.export.save(program, path)
    return path


def save_module(model: nn.Module, example: torch.Tensor, folder: Path) -> None:
    """``model.pt2`` always (loads without pickled code); ``model.pt`` too for a module of the user's own classes."""
    export_pt2(model, example, folder / "model.pt2")
    if not isinstance(model, torch.fx.GraphModule):  # a graph loaded from a .pt2 does not pickle
        torch.save(model, folder / "model.pt")


def _side_by_side(context: CompressionContext, first: nn.Module, second: nn.Module) -> SideBySide | None:
    """The two models timed in alternating blocks, or None where the target cannot hold two at once."""
    try:
        return context.side_by_side(first, second)
    except SpecError:
        return None


def write_output(result: CompressionResult, context: CompressionContext, out: Path) -> Path:
    """Write model.pt, model.pt2, model.onnx (dynamic batch, checked against PyTorch) and the reports at once."""
    from archetype.compress.report import render_table

    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    check_out_dir(out)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model = result.model
        if isinstance(model, DeployedModel):
            files = model.save_deployment(temp, context.example())
            if "model.onnx" not in files:  # the int8 form is PyTorch's: export the fp32 module it computes
                export_onnx(model.fp32_model, context.example(), temp / "model.onnx", dynamic_batch=True)
            if model.fp32_model is not None:  # None: the source was an ONNX graph
                save_module(model.fp32_model, context.example(), temp)
        else:
            model.eval()
            export_onnx(model, context.example(), temp / "model.onnx", dynamic_batch=True)
            save_module(model, context.example(), temp)
        result.out_dir = out
        import json

        (temp / "report.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
        (temp / "report.txt").write_text(render_table(result, context) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        result.out_dir = None
        raise
    return out
