"""Per-slot int8 in ONNX Runtime: the slots marked int8 are quantized, the others stay fp32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from archetype.result import TrialState
from archetype.runtime.data import load_dataset
from archetype.runtime.onnx_export import export_onnx_bytes
from archetype.runtime.targets import example_input
from archetype.searchspace.architecture import Choice
from archetype.worker import precision
from archetype.worker.evaluator import Budget, TrainingEvaluator
from archetype.worker.tabular import tabular_space


def _with(arch, int8: set[str]):
    """``arch`` with exactly the slots ``int8`` (those that have a precision) in int8."""
    choices = tuple(
        Choice.of(c.slot, c.op, {**dict(c.params), "precision": "int8" if c.slot in int8 else "fp32"})
        if "precision" in dict(c.params) else c
        for c in arch.choices
    )
    return arch.space.architecture(choices)


@pytest.fixture(scope="module")
def arch():
    """conv stem, a conv block, a strided conv and the head: four slots with weights."""
    space = tabular_space().with_precision()
    for seed in range(200):
        a = space.sample(np.random.default_rng(seed))
        if [c.op for c in a.choices] == ["conv_bn_act", "conv_bn_act", "conv_bn_act", "identity", "classifier_head"]:
            return a
    raise AssertionError("no all-conv architecture drawn")


def test_nodes_are_mapped_to_their_slots(arch):
    model = arch.build()
    by_slot = precision.quantizable_nodes_by_slot(export_onnx_bytes(model, example_input(arch.input)))
    assert set(by_slot) == {"stem", "stage1_block1", "stage1_down", "head"}
    assert all(len(nodes) == 1 for nodes in by_slot.values())


def test_only_the_int8_slots_get_int8_weights(arch):
    data = load_dataset("digits", 0)
    mixed = _with(arch, {"stem", "stage1.down"})
    model = mixed.build()
    fp32 = export_onnx_bytes(model, example_input(mixed.input))
    quantized = precision.quantize_slots(fp32, mixed, data.train, samples=8)
    weights = {n.name for n in onnx.load_from_string(quantized).graph.node
               if n.op_type == "DequantizeLinear" and n.name.endswith("weight_DequantizeLinear")}
    assert {w.split(".")[1] for w in weights} == {"stem", "stage1_down"}
    assert precision.quantize_slots(fp32, _with(arch, set()), data.train, samples=8) is fp32


@pytest.mark.slow
def test_the_evaluator_scores_and_times_the_mixed_model(arch):
    evaluator = TrainingEvaluator("digits", "cpu-ort")
    fp32 = evaluator.evaluate(_with(arch, set()), Budget(2))
    mixed = evaluator.evaluate(_with(arch, {"stage1.block1", "head"}), Budget(2))
    assert fp32.state is TrialState.COMPLETE and mixed.state is TrialState.COMPLETE, mixed.error
    assert "accuracy_fp32" not in fp32.values
    assert mixed.values["accuracy_fp32"] == pytest.approx(fp32.values["accuracy"])  # same seed, same training
    assert abs(mixed.values["accuracy"] - fp32.values["accuracy"]) < 0.05
    assert mixed.values["size_mb"] < fp32.values["size_mb"]
    assert mixed.values["latency_ms"] > 0


def test_int8_slots_need_the_onnx_runtime_target(arch):
    result = TrainingEvaluator("digits", "cpu-torch").evaluate(_with(arch, {"stem"}), Budget(1))
    assert result.state is TrialState.FAILED
    assert "slots ['stem'] are int8: a per-slot precision is measured on target 'cpu-ort', not 'cpu-torch'" in (
        result.error
    )
