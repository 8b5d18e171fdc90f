"""The joint step: one knapsack over per-group prune ratios, measured tables, finalists fine-tuned."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from archetype.compress.joint_policy import (
    AIM_UNDER,
    BLOCK_REMOVED,
    TIMING_NOISE,
    JointConfig,
    JointSearch,
    PolicyTables,
    choose_ratios,
    joint_step,
)
from archetype.compress.pruning import output_layers, pruning_groups
from archetype.compress.quantization import OrtInt8Model
from archetype.compress.step import count_params_and_macs
from archetype.runtime.targets import get_target


def _brute_force(groups, choices, saving, proxy, need, unit):
    best = math.inf
    for combo in itertools.product(choices, repeat=len(groups)):
        gain = sum(math.floor(saving.get((g, r), 0.0) / unit) for g, r in zip(groups, combo) if r > 0)
        if gain * unit >= need - 1e-12:
            best = min(best, sum(proxy[(g, r)] for g, r in zip(groups, combo) if r > 0))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_knapsack_finds_the_smallest_proxy_that_saves_enough(seed: int) -> None:
    rng = random.Random(seed)
    groups, ratios = ["a", "b", "c", "d"], (0.25, 0.5, 0.75)
    saving = {(g, r): rng.uniform(0.0, 1.0) * r for g in groups for r in ratios}
    proxy = {(g, r): rng.uniform(0.0, 1.0) * r for g in groups for r in ratios}
    need = rng.uniform(0.2, 1.2)
    steps = 400
    chosen = choose_ratios(groups, ratios, saving, proxy, need, steps)
    assert set(chosen) == set(groups) and set(chosen.values()) <= {0.0, *ratios}
    assert sum(saving[(g, r)] for g, r in chosen.items() if r > 0) >= need - 1e-9
    cost = sum(proxy[(g, r)] for g, r in chosen.items() if r > 0)
    assert cost <= _brute_force(groups, [0.0, *ratios], saving, proxy, need, need / steps) + 1e-9


def test_the_knapsack_takes_nothing_when_nothing_is_needed_and_the_most_when_too_much_is() -> None:
    saving = {("a", 0.5): 1.0, ("a", 0.75): 2.0, ("b", 0.5): 3.0, ("b", 0.75): 2.5}
    proxy = dict.fromkeys(saving, 1.0)
    assert choose_ratios(["a", "b"], (0.5, 0.75), saving, proxy, 0.0) == {"a": 0.0, "b": 0.0}
    assert choose_ratios(["a", "b"], (0.5, 0.75), saving, proxy, 100.0) == {"a": 0.75, "b": 0.5}


@pytest.mark.parametrize(("name", "expected"), [
    ("vgg", ["0", "3", "7", "10"]),
    # the stem's channels run through the first block's depthwise conv to the residual sum (one group), each
    # expansion is a group of its own, the second stage's outputs are coupled by its residual sum
    ("mobilenetv2", ["features.1.conv.3", "features.2.conv.3", "features.3.conv.3", "features.3.conv.6"]),
])
def test_channel_groups_of_models_written_as_plain_pytorch(name, expected, user_models, digits) -> None:
    torch.manual_seed(0)
    model = user_models[name]().eval()
    groups = pruning_groups(model, digits.train.x[:1], output_layers(model, 10))
    assert groups == expected  # in the order of the modules; the output layers keep their classes


def test_after_a_failure_the_next_target_is_where_the_scaled_proxy_meets_the_limit(trained_conv_net,
                                                                                    context_for) -> None:
    search = JointSearch(trained_conv_net, context_for(), JointConfig(ratios=(0.25, 0.5, 0.75)))
    groups, rng = search.groups, random.Random(0)
    saving = {(g, r): rng.uniform(0.3, 0.6) * r for g in groups for r in (0.25, 0.5, 0.75)}
    proxy = {(g, r): rng.uniform(0.1, 1.0) * r**2 for g in groups for r in (0.25, 0.5, 0.75)}
    tables = PolicyTables(groups, {"fp32": 1.0}, {"fp32": saving}, proxy)

    def planned_proxy(target_ms: float) -> float:
        return search.plan(tables, "fp32", math.log(1.0 / (target_ms * (1 - AIM_UNDER))))[2]

    assert planned_proxy(0.3) > planned_proxy(0.6) > planned_proxy(0.9) > 0  # each is harder to reach
    allowed = planned_proxy(0.6)
    target = search.calibrated_target(tables, 0.3, 1.0, allowed)
    assert 0.3 < target <= 0.6 * 1.001
    assert planned_proxy(target) <= allowed < planned_proxy(target * 0.999)  # the fastest, to the bisection's step


def test_a_policy_is_aimed_under_its_target(trained_conv_net, context_for) -> None:
    context = context_for()
    search = JointSearch(trained_conv_net, context, JointConfig(ratios=(0.5,), feedback_rounds=1))
    tables = search.tables()
    policy = search.solve(tables, "fp32", 0.9 * tables.base_ms["fp32"])
    assert policy.predicted_ms <= 0.9 * (1 - AIM_UNDER) * tables.base_ms["fp32"]


def test_residual_blocks_are_dropped_whole_as_one_more_choice(user_models, context_for) -> None:
    torch.manual_seed(0)
    model = user_models["mobilenetv2"]().eval()
    search = JointSearch(model, context_for(), JointConfig(ratios=(0.5,)))
    assert set(search.blocks) == {"features.1", "features.3"} <= set(search.groups)
    tables = search.tables()
    assert tables.saving_ms["fp32"][("features.3", BLOCK_REMOVED)] > 0 and ("features.3", 0.5) not in tables.proxy
    inside = [g for g in search.groups if g.startswith("features.3.")]
    assert inside  # the block's expansion roots a channel group of its own: it goes with the block
    candidate = search.pruned({"features.3": BLOCK_REMOVED, inside[0]: 0.5, search.groups[0]: 0.5})
    assert isinstance(candidate.features[3], torch.nn.Identity)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in candidate.modules())
    assert convs == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - 3
    assert candidate(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    fastest = search.plan(tables, "fp32", 50.0)[0]  # more than the tables can save: every saving taken
    assert fastest["features.3"] == BLOCK_REMOVED


def test_the_joint_step_meets_the_budget_within_the_accuracy_limit(trained_conv_net, context_for, digits) -> None:
    example = digits.train.x[:1]
    _, macs = count_params_and_macs(trained_conv_net, example)
    source_ms = context_for().latency_ms(trained_conv_net)
    context = context_for(latency_ms=0.6 * source_ms, epochs=1, drop=5.0, joint=JointConfig(max_fine_tunes=2))
    model, report = joint_step(trained_conv_net, context)
    assert model is not trained_conv_net
    assert context.latency_ms(model) <= 0.6 * source_ms
    assert count_params_and_macs(model, example)[1] < macs
    assert report.details["fine_tunes"] <= 2 and report.details["tried"]
    assert report.details["base_ms"] == {"fp32": pytest.approx(source_ms)}  # the MACs target has no int8
    assert report.details["tried"][-1]["val_accuracy_drop_pp"] <= 5
    assert model(digits.test.x[:3]).shape == (3, 10)


def test_a_policy_that_misses_the_budget_as_deployed_is_followed_by_one_aimed_lower(trained_conv_net, context_for,
                                                                                   monkeypatch) -> None:
    source_ms = context_for().latency_ms(trained_conv_net)
    budget = 0.6 * source_ms
    timed = JointSearch.latency_ms
    # the tables time every model 20% faster than it deploys: the first policy, within its target, misses the budget
    monkeypatch.setattr(JointSearch, "latency_ms", lambda self, model, precision: 0.8 * timed(self, model, precision))
    context = context_for(latency_ms=budget, epochs=1, drop=100.0, joint=JointConfig(max_fine_tunes=3))
    model, report = joint_step(trained_conv_net, context)
    first, *later = report.details["tried"]
    deployed_ms = first["measured_ms"] / 0.8  # the MACs target is exact: what the kept model would have timed
    assert first["measured_ms"] <= budget * (1 + TIMING_NOISE) < deployed_ms
    assert first["next_target_ms"] == pytest.approx(budget * budget / deployed_ms)
    assert later and context.latency_ms(model) <= budget


def test_the_joint_step_keeps_nothing_that_loses_too_much_accuracy(trained_conv_net, context_for) -> None:
    context = context_for(latency_ms=1e-4, epochs=0, drop=0.0, joint=JointConfig(max_fine_tunes=2))
    model, report = joint_step(trained_conv_net, context)
    assert model is trained_conv_net
    assert "no policy kept the validation accuracy within 0 pp" in (report.message or "")
    assert all(t["val_accuracy_drop_pp"] > 0 for t in report.details["tried"])


def test_a_policy_far_beyond_repair_stops_fine_tuning_after_one_epoch(trained_conv_net, context_for) -> None:
    # every group pruned by 0.875 on digits loses far more than 6 x 0.1 pp after an epoch
    settings = {"latency_ms": 1e-4, "epochs": 3, "drop": 0.1}
    _, report = joint_step(trained_conv_net, context_for(**settings, joint=JointConfig(max_fine_tunes=1)))
    first = report.details["tried"][0]["fine-tune"]
    assert first["gave_up"] and first["epochs"] == 1
    _, patient = joint_step(trained_conv_net, context_for(**settings, joint=JointConfig(max_fine_tunes=1,
                                                                                         give_up_within=math.inf)))
    assert patient.details["tried"][0]["fine-tune"]["epochs"] > 1


def test_on_onnx_runtime_the_precision_is_chosen_with_the_ratios(trained_conv_net, context_for) -> None:
    target = get_target("cpu-ort", threads=1)
    source_ms = target.measure(trained_conv_net, context_for().input_type).median_ms
    # any accuracy goes: on 8x8 digits half the time may need every channel group at 0.75, whatever the timing
    context = context_for(latency_ms=0.5 * source_ms, epochs=1, drop=100.0, target=target,
                          joint=JointConfig(ratios=(0.5, 0.75), max_fine_tunes=1))
    model, report = joint_step(trained_conv_net, context)
    assert set(report.details["base_ms"]) == set(report.details["export_bias"]) == {"fp32", "int8"}
    assert all(0.7 < bias < 1.4 for bias in report.details["export_bias"].values())  # the deployed graph, side by side
    policy = report.details["policy"]
    assert isinstance(model, OrtInt8Model) == (policy["precision"] == "int8")
    assert model(context.dataset.test.x[:3]).shape == (3, 10)
