"""``archetype compress``: load the model and data, build the context, run the pipeline, store it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archetype.compress.fine_tune import fine_tune_recipe
from archetype.compress.model_source import ONNX_STEPS, LoadedModel, load_model
from archetype.compress.pipeline import CompressionPipeline, CompressionResult, OnStep, check_out_dir
from archetype.compress.step import Budget, CompressionContext
from archetype.errors import SpecError
from archetype.runtime.data import load_dataset
from archetype.runtime.devices import resolve_device
from archetype.runtime.targets import get_target


@dataclass(frozen=True)
class CompressOptions:
    """The command's inputs, as given on the command line."""

    model: str
    latency_ms: float | None = None
    data: str = "digits"
    target: str = "cpu-ort"
    pipeline: tuple[str, ...] = ("depth", "joint", "quantize")
    max_size_mb: float | None = None
    max_accuracy_drop: float = 1.0
    weights: str | None = None
    out: Path | None = None
    epochs: int = 2  # fine-tuning epochs after each step
    threads: int = 1
    seed: int = 0
    name: str | None = None
    trust_pickle: bool = False  # load a pickled whole module (it can run code as it loads)
    device: str = "auto"  # where fine-tuning runs
    speedup: float | None = None  # the budget as times faster than the source, instead of latency_ms

    def __post_init__(self) -> None:
        if (self.latency_ms is None) == (self.speedup is None):
            raise SpecError("give the latency budget as --latency-ms MS or as --speedup X (one of them)")
        if self.latency_ms is not None:
            check_number("--latency-ms", self.latency_ms, low=0.0, high=MAX_LATENCY_MS)
        if self.speedup is not None:
            check_number("--speedup", self.speedup, low=1.0, high=MAX_SPEEDUP, inclusive=True)
        if self.max_size_mb is not None:
            check_number("--max-size-mb", self.max_size_mb, low=0.0, high=MAX_SIZE_MB)
        check_number("--max-accuracy-drop", self.max_accuracy_drop, low=0.0, high=100.0, inclusive=True)
        check_number("--epochs", self.epochs, low=0, high=MAX_EPOCHS, inclusive=True, integer=True)
        check_number("--threads", self.threads, low=1, high=MAX_THREADS, inclusive=True, integer=True)
        check_number("--seed", self.seed, low=0, high=2**63 - 1, inclusive=True, integer=True)

    @property
    def budget(self) -> Budget:
        """What the result must meet."""
        return Budget(self.latency_ms, self.max_size_mb, self.max_accuracy_drop, self.speedup)


MAX_LATENCY_MS = 3_600_000.0
"""An hour: a larger latency budget is a typo."""
MAX_SPEEDUP = 1_000_000.0
MAX_SIZE_MB = 1_000_000.0
MAX_EPOCHS = 10_000
MAX_THREADS = 1024


def check_number(
    flag: str, value: float, *, low: float, high: float, inclusive: bool = False, integer: bool = False
) -> None:
    """SpecError naming ``flag`` unless ``value`` is a finite number above ``low`` (or equal, with ``inclusive``)
    and at most ``high``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise SpecError(f"{flag} must be {kind}, got {value!r}")
    above = value >= low if inclusive else value > low
    if not (math.isfinite(value) and above and value <= high):
        noun = "integer" if integer else "number"
        wanted = f"a positive {noun}" if low == 0 and not inclusive else f"{kind} >= {low:g}"
        raise SpecError(f"{flag} must be {wanted} of at most {high:g}, got {value!r}")


def parse_pipeline(text: str) -> tuple[str, ...]:
    """``prune,tucker`` -> ("prune", "tucker"); SpecError on an empty one."""
    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    if not steps:
        raise SpecError("--pipeline: give steps separated by commas, e.g. prune,tucker,depth,quantize")
    return steps


def run_compress(
    options: CompressOptions, store: object, on_step: OnStep | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> tuple[LoadedModel, CompressionResult]:
    """Check every input, then compress; the run and its steps go to ``store``."""
    budget = options.budget
    check_out_dir(options.out)
    target = get_target(options.target, threads=options.threads)
    dataset = load_dataset(options.data, options.seed)
    resolve_device(options.device)  # cuda on a machine without CUDA fails here, before anything is stored
    fine_tune = fine_tune_recipe(options.epochs, seed=options.seed, device=options.device)
    context = CompressionContext(target, dataset, budget, fine_tune, seed=options.seed, progress=on_progress)
    pipeline = CompressionPipeline(options.pipeline, context)
    if options.name is not None and any(r.name == options.name for r in store.compression_runs()):
        raise SpecError(f"--name {options.name}: a compression run of that name is already stored")
    loaded = load_model(options.model, weights=options.weights, store=store, dataset=dataset,
                        trust_pickle=options.trust_pickle)
    if loaded.is_onnx:
        check_onnx_pipeline(options)
    result = pipeline.run(loaded.model, store=store, run_name=options.name, source=loaded.source,
                          source_trial=loaded.source_trial, out=options.out, on_step=on_step)
    return loaded, result


def check_onnx_pipeline(options: CompressOptions) -> None:
    """SpecError unless every step works on an ONNX graph and the target runs one."""
    needs_module = [step for step in options.pipeline if step not in ONNX_STEPS]
    if needs_module:
        raise SpecError(f"--pipeline {','.join(options.pipeline)}: {', '.join(needs_module)} need a PyTorch module; "
                        f"an .onnx MODEL takes only {', '.join(ONNX_STEPS)} (give a .pt2 for the others)")
    if options.target != "cpu-ort":
        raise SpecError(f"--target {options.target}: an .onnx MODEL runs on cpu-ort")
