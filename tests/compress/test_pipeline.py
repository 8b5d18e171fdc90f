"""The pipeline: keeps steps that speed the model up, rejects the rest, stops at the budget, stores every step."""

from __future__ import annotations

import copy
import json

import pytest
from torch import nn

from archetype.compress.pipeline import CompressionPipeline
from archetype.compress.step import Budget, StepReport, register_step
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


BUDGETS_SEEN: list[Budget] = []


@register_step("test-record-budget")
def record_budget_step(model: nn.Module, context) -> tuple[nn.Module, StepReport]:
    """A step that changes nothing and notes the budget it was given."""
    BUDGETS_SEEN.append(context.budget)
    return model, StepReport("test-record-budget")


@pytest.mark.parametrize("wanted", [1.1, 50.0])
def test_a_speedup_budget_reaches_each_step_as_the_ms_it_leaves(trained_conv_net, context_for, wanted) -> None:
    context = context_for(drop=100.0)
    context.budget = budget = Budget(speedup=wanted, max_accuracy_drop=100.0)
    BUDGETS_SEEN.clear()
    result = CompressionPipeline(["test-record-budget", "test-drop-conv", "test-record-budget"], context).run(
        trained_conv_net)
    dropped = result.steps[2]
    reached = result.source.latency_ms / dropped.metrics.latency_ms  # the MACs target: exact, no side by side
    assert dropped.accepted and dropped.speedup == pytest.approx(reached) and 1.1 < reached < 50
    first = BUDGETS_SEEN[0]
    assert first.speedup == wanted and first.latency_ms == pytest.approx(result.source.latency_ms / wanted)
    if wanted < reached:  # met by the kept step: the pipeline stops there
        assert result.status == "complete" and len(BUDGETS_SEEN) == 1
    else:  # the second step works to what the first leaves: the same limit in ms, from the faster model
        second = BUDGETS_SEEN[1]
        assert result.status == "unmet" and second.latency_ms == pytest.approx(first.latency_ms)
        assert second.speedup == pytest.approx(wanted / reached)
    assert context.budget is budget and budget.to_json()["speedup"] == wanted


@pytest.mark.parametrize("direct", [1.0, 0.8])
def test_a_speedup_met_by_the_product_of_ratios_is_confirmed_side_by_side(trained_conv_net, context_for, monkeypatch,
                                                                          direct) -> None:
    from archetype.runtime.measure import Latency, SideBySide

    context = context_for(drop=100.0)
    source_ms = context.latency_ms(trained_conv_net)

    calls: list[nn.Module] = []

    def side_by_side(first: nn.Module, second: nn.Module, rounds: int = 15) -> SideBySide:
        """MACs ratios; after the step's own, the source's to the result's times ``direct`` (timed directly)."""
        calls.append(first)
        a, b = context.latency_ms(first), context.latency_ms(second)
        ratio = a / b * (direct if len(calls) > 1 else 1.0)
        return SideBySide(Latency(a, 0.0, 1, 1), Latency(b, 0.0, 1, 1), ratio, ratio, ratio, rounds)

    monkeypatch.setattr(context, "side_by_side", side_by_side)
    reached = source_ms / context.latency_ms(drop_conv_step(trained_conv_net, context)[0])
    context.budget = Budget(speedup=0.9 * reached, max_accuracy_drop=100.0)
    BUDGETS_SEEN.clear()
    result = CompressionPipeline(["test-drop-conv", "test-record-budget"], context).run(trained_conv_net)
    assert result.steps[1].speedup == pytest.approx(reached)  # step by step, the product meets the budget
    assert result.side_by_side.ratio == pytest.approx(direct * reached)
    assert len(calls) == 2 and calls[1] is trained_conv_net  # the step's timing, then the source's and the result's
    if direct == 1.0:  # confirmed: the pipeline stops there, and the confirming timing is the final one
        assert result.status == "complete" and not BUDGETS_SEEN
    else:  # refuted: the next step runs, to the ms that the direct ratio leaves
        assert result.status == "unmet" and len(BUDGETS_SEEN) == 1
        assert BUDGETS_SEEN[0].speedup == pytest.approx(0.9 / direct)


def test_a_budget_is_a_latency_or_a_speedup() -> None:
    with pytest.raises(SpecError, match="--latency-ms MS or --speedup X"):
        Budget()
    with pytest.raises(SpecError, match="--speedup must be a positive number"):
        Budget(speedup=-2.0)
    assert Budget(speedup=4).describe() == "4x faster than the source" and Budget(0.5).describe() == "0.5 ms"
    assert Budget(0.5).for_step(3.0, 2.0) == Budget(0.5) and Budget(0.5).limit_ms_for(4.0) == 0.5
    step = Budget(speedup=4.0, max_accuracy_drop=0.3).for_step(3.0, 2.0)  # 2x reached, 2x still needed
    assert step == Budget(1.5, max_accuracy_drop=0.3, speedup=2.0) and step.limit_ms_for(5.0) == 2.5


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
