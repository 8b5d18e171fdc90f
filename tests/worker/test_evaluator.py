"""TrainingEvaluator: complete, pruned before training, failed with the error text; never raises; pickles."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest

from archetype.compress.step import deployed_size_mb
from archetype.objectives import Constraint
from archetype.result import TrialState
from archetype.runtime.training import TrainConfig
from archetype.searchspace import Architecture
from archetype.searchspace.network import ArchitectureNetwork
from archetype.worker.evaluator import Budget, TrainingEvaluator

from ..conftest import QUICK

SIZE_VALUES = {"params", "macs", "size_mb"}
LATENCY_VALUES = {"latency_ms", "latency_spread"}


@pytest.fixture(scope="module")
def arch(tiny_arch: Architecture) -> Architecture:
    return tiny_arch


def test_complete_evaluation_on_the_default_target(arch):
    evaluator = TrainingEvaluator(dataset="digits", target="cpu-ort", seed=0, protocol=QUICK)
    evaluator = pickle.loads(pickle.dumps(evaluator))
    result = evaluator.evaluate(arch, Budget(epochs=3))
    assert result.state is TrialState.COMPLETE, result.error
    assert result.error is None
    assert SIZE_VALUES | LATENCY_VALUES | {"accuracy", "test_accuracy"} <= set(result.values)
    assert result.values["params"] == arch.params() and result.values["macs"] == arch.macs()
    assert 0 < result.values["size_mb"] < 1
    model = arch.build()
    stored_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert result.values["size_mb"] == pytest.approx(stored_bytes / 1e6)  # MB, not MiB
    assert result.values["size_mb"] == pytest.approx(deployed_size_mb(model))  # as compress measures it
    assert result.values["latency_ms"] > 0 and math.isfinite(result.values["latency_ms"])
    assert result.values["accuracy"] > 0.8 and 0 < result.values["test_accuracy"] <= 1
    assert {"build_s", "measure_s", "train_s", "total_s"} <= set(result.timings)
    assert result.timings["total_s"] >= result.timings["train_s"] > 0
    assert result.target == "cpu-ort" and result.fingerprint["runtime"] == "onnxruntime"
    again = pickle.loads(pickle.dumps(evaluator))
    assert repr(again) == repr(evaluator)


@pytest.mark.parametrize(
    ("constraint", "error"),
    [
        ("latency_ms<=1e-6", r"latency_ms [0-9.e-]+ > budget 1e-06: not trained"),
        ("params<=10", r"params [0-9.e+]+ > budget 10: not trained"),
        ("size_mb<=1e-6", r"size_mb [0-9.e-]+ > budget 1e-06: not trained"),
    ],
)
def test_an_impossible_pre_training_constraint_prunes_without_training(arch, constraint, error):
    evaluator = TrainingEvaluator(target="cpu-torch", constraints=(Constraint.parse(constraint),), protocol=QUICK)
    result = evaluator.evaluate(arch, Budget(epochs=3))
    assert result.state is TrialState.PRUNED
    assert re.fullmatch(error, result.error), result.error
    assert "train_s" not in result.timings and "accuracy" not in result.values
    assert SIZE_VALUES | LATENCY_VALUES <= set(result.values)


def test_a_constraint_on_accuracy_does_not_prune_before_training(arch):
    evaluator = TrainingEvaluator(target="cpu-torch", constraints=(Constraint.parse("accuracy>=0.99"),), protocol=QUICK)
    result = evaluator.evaluate(arch, Budget(epochs=1))
    assert result.state is TrialState.COMPLETE and "accuracy" in result.values


def _explode(self, x):
    raise RuntimeError("forward exploded")


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("cpu-torch", "RuntimeError: forward exploded (at test_evaluator.py:"),
        ("cpu-ort", "ExportError: cannot export ArchitectureNetwork to ONNX: RuntimeError: forward exploded (at "),
    ],
)
def test_a_model_that_raises_fails_with_the_error_text(arch, monkeypatch, target, error):
    monkeypatch.setattr(ArchitectureNetwork, "forward", _explode)
    evaluator = TrainingEvaluator(target=target, protocol=QUICK)
    result = evaluator.evaluate(arch, Budget(epochs=1))
    assert result.state is TrialState.FAILED
    assert result.error.startswith(error), result.error
    assert "\n" not in result.error
    assert SIZE_VALUES <= set(result.values) and "latency_ms" not in result.values
    assert {"build_s", "total_s"} <= set(result.timings)
    assert pickle.loads(pickle.dumps(evaluator)).target == target


def test_a_diverging_training_fails_with_the_training_error(arch):
    evaluator = TrainingEvaluator(target="cpu-torch", train=TrainConfig(lr=1e30), protocol=QUICK)
    result = evaluator.evaluate(arch, Budget(epochs=2))
    assert result.state is TrialState.FAILED
    assert result.error.startswith("TrainingError: loss became"), result.error
    assert "in epoch" in result.error
    assert LATENCY_VALUES <= set(result.values)


def test_an_unknown_data_set_fails_instead_of_raising(arch):
    result = TrainingEvaluator(dataset="imagenet", target="cpu-torch", protocol=QUICK).evaluate(arch, Budget(1))
    assert result.state is TrialState.FAILED
    assert result.error.startswith("SpecError: unknown data set 'imagenet'"), result.error


def test_data_of_another_shape_fails_with_both_types(arch, tmp_path):
    path = tmp_path / "colour.npz"
    np.savez(path, x=np.zeros((100, 3, 4, 4), dtype=np.float32), y=np.arange(100) % 10)
    result = TrainingEvaluator(dataset=f"npz:{path}", target="cpu-torch", protocol=QUICK).evaluate(arch, Budget(1))
    assert result.state is TrialState.FAILED
    assert "the architecture takes Image[1,8,8] but data set" in result.error and "Image[3,4,4]" in result.error


def test_budget_refuses_negative_epochs():
    with pytest.raises(ValueError, match="non-negative integer"):
        Budget(epochs=-1)
