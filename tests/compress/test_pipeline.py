"""The pipeline: keeps steps that speed the model up, rejects the rest, stops at the budget, stores every step."""

from __future__ import annotations

import copy
import json

import pytest
from torch import nn

from archetype.compress.pipeline import CompressionPipeline
from archetype.compress.step import StepReport, register_step
from archetype.errors import SpecError
from archetype.store import Store


@register_step("test-copy")
def copy_step(model: nn.Module, context) -> tuple[nn.Module, StepReport]:
    """A step that returns an equal model: no faster anywhere."""
    return copy.deepcopy(model), StepReport("test-copy", message="copied")


@register_step("test-drop-conv")
def drop_conv_step(model: nn.Module, context) -> tuple[nn.Module, StepReport]:
    """A step that removes the middle conv unit of the test conv net: faster and still accurate-ish."""
    layers = list(copy.deepcopy(model).children())
    return nn.Sequential(*layers[:3], *layers[6:]), StepReport("test-drop-conv")


def test_a_step_that_does_not_speed_up_is_rejected(trained_conv_net, context_for) -> None:
    pipeline = CompressionPipeline(["test-copy"], context_for(latency_ms=0.01, drop=100.0))
    result = pipeline.run(trained_conv_net)
    source, step = result.steps
    assert source.name == "source" and source.accepted
    assert not step.accepted and "not faster" in step.message
    assert result.model is trained_conv_net
    assert result.status == "unmet"


def test_a_faster_step_is_kept_and_the_pipeline_stops_at_the_budget(trained_conv_net, context_for, tmp_path) -> None:
    context = context_for(latency_ms=0.01, drop=100.0)
    before = context.latency_ms(trained_conv_net)
    context.budget = type(context.budget)(before * 0.9, max_accuracy_drop=100.0)
    store = Store.open(f"sqlite:///{tmp_path / 'a.db'}")
    out = tmp_path / "out"
    result = CompressionPipeline(["test-drop-conv", "test-copy"], context).run(
        trained_conv_net, store=store, run_name="r1", source="test", out=out
    )
    assert [s.name for s in result.steps] == ["source", "test-drop-conv"]  # budget met: test-copy never runs
    assert result.status == "complete" and result.steps[1].accepted
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.pt", "model.pt2", "report.json",
                                                     "report.txt"]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["speedup"] > 1.1
    assert report["side_by_side"] is None  # the MACs target times nothing: the step figures stand
    stored = store.compression_run("r1")
    assert stored.status.value == "complete"
    steps = [(s.position, s.name, s.accepted) for s in stored.steps]
    assert steps == [(0, "source", True), (1, "test-drop-conv", True)]
    assert stored.steps[1].metrics["latency_ms"] == pytest.approx(result.metrics.latency_ms)
    store.close()


def test_an_accuracy_drop_over_the_budget_is_rejected(trained_conv_net, context_for) -> None:
    context = context_for(latency_ms=0.01, drop=0.0)
    result = CompressionPipeline(["test-drop-conv"], context).run(trained_conv_net)
    step = result.steps[1]
    if step.metrics.accuracy < result.source.accuracy:
        assert not step.accepted and "accuracy drops" in step.message


def test_a_met_budget_stops_before_any_step(trained_conv_net, context_for, tmp_path) -> None:
    result = CompressionPipeline(["test-copy"], context_for(latency_ms=1e6)).run(trained_conv_net, out=tmp_path / "o")
    assert result.already_met and result.status == "complete"
    assert [s.name for s in result.steps] == ["source"]
    assert not (tmp_path / "o").exists()


def test_unknown_steps_and_bad_data_fail_before_anything_runs(trained_conv_net, context_for, digits) -> None:
    with pytest.raises(SpecError, match="unknown step 'shrink'"):
        CompressionPipeline(["prune", "shrink"], context_for())
    wide = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(SpecError, match="--data digits: the model cannot take its samples of shape"):
        CompressionPipeline(["test-copy"], context_for()).run(wide)


@pytest.mark.parametrize("name", ["prune", "tucker", "depth", "joint"])
def test_each_builtin_step_returns_a_working_model_and_its_report(name, digits, trained_conv_net, context_for) -> None:
    from archetype.compress.depth_step import DepthConfig
    from archetype.compress.joint_policy import JointConfig
    from archetype.compress.step import get_step, list_steps
    from archetype.compress.tucker import TuckerConfig

    assert {"prune", "tucker", "depth", "quantize", "joint"} <= set(list_steps())
    context = context_for(latency_ms=0.3, depth=DepthConfig(importance_samples=128, knapsack_steps=200),
                          tucker=TuckerConfig(initial_tau=0.5), joint=JointConfig(max_fine_tunes=1))
    model, report = get_step(name)(trained_conv_net, context)
    assert report.name == name and isinstance(report.details, dict)
    assert model(digits.test.x[:2]).shape == (2, 10)


def test_outputs_take_any_batch_and_the_speedup_is_timed_side_by_side(trained_conv_net, context_for, macs_target,
                                                                      digits, tmp_path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from archetype.runtime.measure import MeasureProtocol
    from archetype.runtime.targets import TorchCpuTarget

    class TimedMacsTarget(macs_target):
        """Steps judged by MACs (deterministic), the final comparison timed for real in eager PyTorch."""

        runner = TorchCpuTarget.runner

    target = TimedMacsTarget()
    target.protocol = MeasureProtocol(warmup=2, min_block_ms=1.0)
    context = context_for(latency_ms=0.01, drop=100.0, target=target)
    before = context.latency_ms(trained_conv_net)
    context.budget = type(context.budget)(before * 0.9, max_accuracy_drop=100.0)
    out = tmp_path / "out"
    result = CompressionPipeline(["test-drop-conv"], context).run(trained_conv_net, out=out)
    timing = result.side_by_side
    assert timing is not None and timing.rounds == 15
    assert timing.first.median_ms > 0 and timing.second.median_ms > 0
    assert timing.ratio_low <= timing.ratio <= timing.ratio_high
    report = json.loads((out / "report.json").read_text())
    assert report["speedup"] == pytest.approx(timing.ratio) and report["side_by_side"]["rounds"] == 15
    assert "side by side" in (out / "report.txt").read_text()
    x = digits.test.x[:5]
    session = ort.InferenceSession(str(out / "model.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = result.model(x).numpy()
        assert np.allclose(got, expected, atol=1e-4)
        assert torch.allclose(torch.export.load(out / "model.pt2").module()(x[:3]), result.model(x[:3]), atol=1e-5)


def test_a_step_that_costs_accuracy_is_repaired_before_it_is_judged(trained_conv_net, context_for) -> None:
    context = context_for(latency_ms=0.01, drop=0.0, epochs=2)
    result = CompressionPipeline(["test-drop-conv"], context).run(trained_conv_net)
    step = result.steps[1]
    repair = step.details["repair"]
    assert repair["epochs"] >= 1 and repair["distilled"]
    assert repair["drop_before_pp"] > 0  # removing a conv unit costs accuracy...
    final_drop = 100 * (result.source.accuracy - step.metrics.accuracy)
    assert final_drop < repair["drop_before_pp"]  # ...and the repair wins part of it back
    assert "repair" in step.message
