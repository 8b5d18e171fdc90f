"""``archetype train STUDY:TRIAL``: the chosen architecture trained from scratch on all training data, then
written as ``model.pt2`` (``torch.export``) and ``model.onnx`` with its measured test accuracy and latency."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from archetype.errors import SpecError
from archetype.runtime.data import Dataset, Split, load_dataset
from archetype.runtime.devices import resolve_device
from archetype.runtime.targets import get_target
from archetype.runtime.training import evaluate_accuracy, recipe, train
from archetype.searchspace.architecture import Architecture
from archetype.worker.evaluator import model_size_mb

REPORT_VERSION = 1
_TRIAL = re.compile(r"^(?P<study>[^:]+):(?P<number>\d+)$")


@dataclass(frozen=True)
class FinalTrainOptions:
    """The command's inputs; ``None`` fields fall back to what the study was searched with."""

    trial: str  # STUDY:TRIAL
    out: Path
    epochs: int = 10
    recipe: str = "full"
    data: str | None = None
    target: str | None = None
    device: str = "auto"
    seed: int | None = None


@dataclass(frozen=True)
class FinalModel:
    """What was written: the files, and the model's measured figures."""

    out: Path
    study: str
    trial: int
    data: str
    target: str
    device: str
    epochs: int
    recipe: str
    test_accuracy: float
    latency_ms: float
    latency_spread: float
    params: int
    size_mb: float
    train_s: float
    latency_budget_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {"version": REPORT_VERSION, **asdict(self), "out": str(self.out)}


def run_final_training(
    options: FinalTrainOptions, store: Any, on_epoch: Callable[[int, float], None] | None = None
) -> FinalModel:
    """Check every input, train, measure and write ``options.out`` whole; SpecError before any work on bad input."""
    from archetype.compress.pipeline import check_out_dir
    from archetype.runtime.onnx_export import export_onnx

    match = _TRIAL.match(options.trial)
    if match is None:
        raise SpecError(f"TRIAL {options.trial!r}: expected STUDY:NUMBER, e.g. conv-small-1:7")
    if isinstance(options.epochs, bool) or not isinstance(options.epochs, int) or options.epochs < 1:
        raise SpecError(f"--epochs must be a positive integer, got {options.epochs!r}")
    out = Path(options.out).absolute()
    check_out_dir(out)
    study_name, number = match["study"], int(match["number"])
    study = store.get_study(study_name)
    record = store.trial(study_name, number)
    spec = study.spec
    seed = int(spec.get("seed", 0)) if options.seed is None else options.seed
    data_name = options.data or str(spec.get("data", "digits"))
    target_name = options.target or study.target
    device = resolve_device(options.device)
    config = recipe(options.recipe, epochs=options.epochs, seed=seed, device=options.device)
    target = get_target(target_name)
    dataset = load_dataset(data_name, seed)
    arch = Architecture.from_json(record.arch)
    if str(arch.input) != str(dataset.input_type):
        raise SpecError(f"--data {data_name}: its samples are {dataset.input_type}, trial {number} of study "
                        f"'{study_name}' takes {arch.input}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = arch.build()
    report = train(model, all_training_data(dataset), config, on_epoch=on_epoch)
    model.eval()
    accuracy = evaluate_accuracy(model, dataset.test)
    latency = target.measure(model, arch.input)
    budgets = [c.bound for c in study.constraints if c.name == "latency_ms" and c.op == "<="]
    result = FinalModel(
        out=out, study=study_name, trial=number, data=data_name, target=target_name, device=str(device),
        epochs=options.epochs, recipe=options.recipe, test_accuracy=accuracy, latency_ms=latency.median_ms,
        latency_spread=latency.spread, params=sum(p.numel() for p in model.parameters()),
        size_mb=model_size_mb(model), train_s=report.seconds, latency_budget_ms=min(budgets) if budgets else None,
    )
    example = dataset.test.x[:2]
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        torch.export.save(exported_program(model, example), temp / "model.pt2")
        export_onnx(model, example, temp / "model.onnx")
        (temp / "report.json").write_text(json.dumps(
            {**result.to_json(), "arch": record.arch, "recipe_fields": asdict(config),
             "losses": report.losses}, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return result


def exported_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` through ``torch.export`` with a dynamic batch size, or the example's batch where it cannot vary."""
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    except Exception:  # an operator that fixes the batch size: the program takes the example's
        return torch.export.export(model, (example,))


def all_training_data(dataset: Dataset) -> Dataset:
    """``dataset`` with its validation split added to the training split (the test split stays held out)."""
    train_split = Split(torch.cat((dataset.train.x, dataset.val.x)), torch.cat((dataset.train.y, dataset.val.y)))
    return Dataset(dataset.name, train_split, dataset.val, dataset.test, dataset.input_type, dataset.num_classes)

