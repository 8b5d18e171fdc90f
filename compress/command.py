"""``archetype compress``: load the model and data, build the context, run the pipeline, store it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from archetype.compress.model_source import LoadedModel, load_model
from archetype.compress.pipeline import CompressionPipeline, CompressionResult, OnStep, check_out_dir
from archetype.compress.step import Budget, CompressionContext
from archetype.errors import SpecError
from archetype.worker.data import load_dataset
from archetype.worker.devices import resolve_device
from archetype.worker.targets import get_target
from archetype.worker.training import TrainConfig


@dataclass(frozen=True)
class CompressOptions:
    """The command's inputs, as given on the command line."""

    model: str
    latency_ms: float
    data: str = "digits"
    target: str = "cpu-ort"
    pipeline: tuple[str, ...] = ("prune", "tucker", "depth", "quantize")
    max_size_mb: float | None = None
    max_accuracy_drop: float = 1.0
    weights: str | None = None
    out: Path | None = None
    epochs: int = 2  # fine-tuning epochs after each step
    threads: int = 1
    seed: int = 0
    name: str | None = None
    device: str = "auto"  # where fine-tuning runs


def parse_pipeline(text: str) -> tuple[str, ...]:
    """``prune,tucker`` -> ("prune", "tucker"); SpecError on an empty one."""
    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    if not steps:
        raise SpecError("--pipeline: give steps separated by commas, e.g. prune,tucker,depth,quantize")
    return steps


def run_compress(
    options: CompressOptions, store: object, on_step: OnStep | None = None
) -> tuple[LoadedModel, CompressionResult]:
    """Check every input, then compress; the run and its steps go to ``store``."""
    budget = Budget(options.latency_ms, options.max_size_mb, options.max_accuracy_drop)
    if options.epochs < 0:
        raise SpecError(f"--epochs must be >= 0, got {options.epochs}")
    check_out_dir(options.out)
    target = get_target(options.target, threads=options.threads)
    dataset = load_dataset(options.data, options.seed)
    resolve_device(options.device)  # cuda on a machine without CUDA fails here, before anything is stored
    fine_tune = TrainConfig(epochs=options.epochs, lr=1e-3, seed=options.seed, device=options.device)
    context = CompressionContext(target, dataset, budget, fine_tune, seed=options.seed)
    pipeline = CompressionPipeline(options.pipeline, context)
    if options.name is not None and any(r.name == options.name for r in store.compression_runs()):
        raise SpecError(f"--name {options.name}: a compression run of that name is already stored")
    loaded = load_model(options.model, weights=options.weights, store=store, dataset=dataset)
    result = pipeline.run(loaded.model, store=store, run_name=options.name, source=loaded.source,
                          source_trial=loaded.source_trial, out=options.out, on_step=on_step)
    return loaded, result
