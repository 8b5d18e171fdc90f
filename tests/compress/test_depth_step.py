"""The depth step: the DP's plan applied, merged and fine-tuned; networks it cannot read are left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archetype.compress.depth_step import DepthConfig, conv_block_onnx, depth_step
from archetype.compress.tucker import decompose


def _convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_depth_step_merges_convolutions_under_the_budget(digits, trained_conv_net, context_for, macs_target) -> None:
    config = DepthConfig(importance_samples=128, knapsack_steps=500)
    target = macs_target(ms_per_layer=0.5)  # per-call overhead dominates, as for small models on a CPU runtime
    before = context_for(target=target).latency_ms(trained_conv_net)
    context = context_for(latency_ms=0.8 * before, target=target, depth=config)
    model, report = depth_step(trained_conv_net, context)
    assert model is not trained_conv_net
    assert report.details["plan"]["removed_activations"]
    assert _convs(model) < _convs(trained_conv_net)
    assert model(digits.test.x[:3]).shape == (3, 10)


def test_depth_step_skips_a_network_that_is_not_a_conv_chain(trained_conv_net, context_for) -> None:
    import copy

    model = copy.deepcopy(trained_conv_net)
    decompose(model, tau=0.5)  # Tucker layers are not plain convolutions
    same, report = depth_step(model, context_for())
    assert same is model
    assert "not a conv chain" in (report.message or "")


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.Hardswish(), nn.SiLU(), None])
@pytest.mark.parametrize("groups,stride", [(1, 1), (8, 2)])
def test_a_merged_block_written_as_onnx_computes_what_torch_does(act, groups: int, stride: int) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(8, 16, 5, stride, 2, groups=groups), *([act] if act is not None else []))
    x = torch.randn(1, 8, 9, 9)
    session = ort.InferenceSession(conv_block_onnx(block.eval(), tuple(x.shape)), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), block(x).detach(), atol=1e-5, rtol=1e-4)
    assert conv_block_onnx(nn.Sequential(nn.Conv2d(8, 8, 3), nn.GELU()), (1, 8, 9, 9)) is None  # left to the exporter


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet", "vgg"])
def test_depth_step_accepts_models_written_as_plain_pytorch(name: str, user_models, digits, context_for,
                                                            macs_target) -> None:
    torch.manual_seed(0)
    model = user_models[name]().eval()
    config = DepthConfig(importance_samples=64, knapsack_steps=300)
    target = macs_target(ms_per_layer=0.5)
    before = context_for(target=target).latency_ms(model)
    context = context_for(latency_ms=0.7 * before, target=target, epochs=0, depth=config)
    merged, report = depth_step(model, context)
    assert merged is not model, report.message
    assert report.details["plan"]["removed_activations"]
    assert _convs(merged) < _convs(model)
    assert context.latency_ms(merged) < before
    assert merged(digits.test.x[:3]).shape == (3, 10)


def test_a_budget_below_every_plan_takes_the_fastest_without_scoring(
        user_models, digits, context_for, macs_target) -> None:
    torch.manual_seed(0)
    model = user_models["mobilenetv2"]().eval()
    target = macs_target(ms_per_layer=0.5)
    lines: list[str] = []
    context = context_for(latency_ms=1e-4, target=target, epochs=0, depth=DepthConfig(knapsack_steps=300))
    context.progress = lines.append
    merged, report = depth_step(model, context)
    assert not any("scoring network" in line for line in lines)  # the importance table could not change the plan
    plan = report.details["plan"]
    assert "the fastest plan" in report.message
    assert _convs(merged) < _convs(model)
    fewer = [b for b in plan["removed_activations"] if not any(i < b < j for i, j in plan["blocks"])]
    assert not fewer  # every activation removed buys a merge
    assert context.latency_ms(merged) < context.latency_ms(model)
    assert merged(digits.test.x[:3]).shape == (3, 10)


def test_a_fastest_plan_that_gains_too_little_is_left_to_the_steps_after(user_models, context_for,
                                                                        macs_target) -> None:
    model = user_models["resnet"]().eval()
    context = context_for(latency_ms=1e-4, target=macs_target(ms_per_layer=0.5),
                          depth=DepthConfig(knapsack_steps=300, min_speedup=100.0))
    same, report = depth_step(model, context)
    assert same is model
    assert "out of depth compression's reach" in report.message and "under 100x" in report.message
