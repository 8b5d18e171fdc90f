"""Structured pruning: fewer parameters, the same output shape, ratios chosen by measured latency."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from archetype.compress.pruning import PruningConfig, output_layers, prunable_blocks, prune_channels, prune_step
from archetype.searchspace import Architecture

MOBILE = {
    "input": "Image[1,8,8]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3}},
        {"slot": "block1", "op": "inverted_residual", "params": {"width": 16, "expand": 2}},
        {"slot": "block2", "op": "inverted_residual", "params": {"width": 24, "expand": 2, "stride": 2}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
    ],
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("importance", ["magnitude", "taylor", "bn_scale"])
def test_pruning_removes_channels_and_keeps_the_output(importance: str, digits) -> None:
    torch.manual_seed(0)
    model = Architecture.from_json(MOBILE).build().eval()
    x = digits.train.x[:4]
    before = _params(model)
    blocks = prunable_blocks(model)
    assert len(blocks) == 3  # stem and the two inverted residuals; the head has no conv
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    prune_channels(model, x[:1], dict.fromkeys(blocks, 0.5), importance=importance, ignored=head,
                   taylor_batch=(digits.train.x[:32], digits.train.y[:32]))
    assert _params(model) < 0.7 * before
    assert model(x).shape == (4, 10)
    assert all(m.out_features == 10 for m in head)


def test_global_pruning_keeps_the_output(digits, trained_conv_net) -> None:
    model = copy.deepcopy(trained_conv_net)
    head = [model[-1]]
    prune_channels(model, digits.train.x[:1], {model: 0.4}, global_pruning=True, ignored=head)
    assert _params(model) < _params(trained_conv_net)
    assert model(digits.train.x[:3]).shape == (3, 10)


def test_prune_step_prunes_the_blocks_that_pay_and_fine_tunes(digits, trained_conv_net, context_for) -> None:
    context = context_for(latency_ms=0.05, prune=PruningConfig(ratios=(0.25, 0.5)))
    before = context.latency_ms(trained_conv_net)
    pruned, report = prune_step(trained_conv_net, context)
    assert pruned is not trained_conv_net
    assert context.latency_ms(pruned) < before
    assert report.details["blocks"]  # blocks whose pruning alone saves time on the target
    assert report.details["ratio"] in (0.25, 0.5)
    assert pruned(digits.test.x[:2]).shape == (2, 10)


def test_prune_step_prunes_nothing_when_no_block_pays(trained_conv_net, context_for) -> None:
    context = context_for(prune=PruningConfig(min_gain=0.99))
    model, report = prune_step(trained_conv_net, context)
    assert model is trained_conv_net
    assert "nothing pruned" in (report.message or "")


@pytest.mark.parametrize(("name", "count"), [("mobilenetv2", 4), ("resnet", 3), ("vgg", 4)])
def test_blocks_of_models_written_as_plain_pytorch(name: str, count: int, user_models, digits) -> None:
    torch.manual_seed(0)
    model = user_models[name]().eval()
    blocks = prunable_blocks(model)
    assert len(blocks) == count  # mobilenet: features' stem and blocks; resnet: stem, layer1, layer2; vgg: its convs
    before = _params(model)
    prune_channels(model, digits.train.x[:1], dict.fromkeys(blocks[1:], 0.5), ignored=output_layers(model, 10))
    assert _params(model) < before
    assert model(digits.train.x[:4]).shape == (4, 10)
