"""Depth compression by two-stage DP: tables, optimality against brute force, budgets, plans applied end to end."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from archetype.compress.conv_chain import ChainNetwork, ConvChain, PaddedSpan, extract_chain, merge_network
from archetype.compress.depth_compression import (
    DepthCompressionPlan,
    FineTuneScore,
    ImportanceTable,
    LatencyTable,
    apply_plan,
    importance_spans,
    measure_importance_table,
    measure_latency_table,
    optimal_merges,
    solve,
    time_steps,
)
from archetype.errors import SpecError
from archetype.runtime.data import load_dataset
from archetype.runtime.onnx_export import export_onnx
from archetype.runtime.training import TrainConfig
from archetype.searchspace import Architecture

ATOL = 1e-4


def macs_ms(module: nn.Module, shape: tuple[int, ...]) -> float:
    """A deterministic cost model: 1 ms per million MACs of the convolutions, plus 0.01 ms per launched block."""
    total, x = 0, torch.zeros(shape)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            y = m(x)
            total += y.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            x = y
    return total / 1e6 + 0.01


def _plain_chain(layers: int, seed: int) -> ConvChain:
    """A chain of 3x3 and 1x1 convs of varying width; some boundaries carry no activation."""
    rng = np.random.default_rng(seed)
    modules: list[nn.Module] = []
    channels = 3
    for k in range(layers):
        width = int(rng.choice([4, 8, 12]))
        modules += [nn.Conv2d(channels, width, int(rng.choice([1, 3])), padding="same"), nn.BatchNorm2d(width)]
        if k == layers - 1 or rng.random() < 0.8:
            modules.append(nn.ReLU())
        channels = width
    return extract_chain(nn.Sequential(*modules), (3, 6, 6))


def _random_importance(chain: ConvChain, latency: LatencyTable, seed: int) -> ImportanceTable:
    rng = np.random.default_rng(seed)
    spans = importance_spans(chain, optimal_merges(latency))
    return ImportanceTable({s: float(rng.uniform(-1.0, 0.0)) for s in spans})


def _compositions(i: int, j: int) -> list[list[tuple[int, int]]]:
    out = []
    for cuts in itertools.product([False, True], repeat=j - i - 1):
        points = [i, *[i + 1 + n for n, cut in enumerate(cuts) if cut], j]
        out.append(list(itertools.pairwise(points)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_stage_one_is_the_fastest_merge_pattern_of_every_span(seed: int) -> None:
    chain = _plain_chain(8, seed)
    latency = measure_latency_table(chain, macs_ms, max_kernel=5)
    merges = optimal_merges(latency)
    for i in range(chain.layers):
        for j in range(i + 1, chain.layers + 1):
            options = [sum(latency.entries.get(b, math.inf) for b in parts) for parts in _compositions(i, j)]
            assert merges.time.get((i, j), math.inf) == pytest.approx(min(options))
            if (i, j) in merges.time:
                blocks = merges.blocks((i, j))
                assert sum(latency.entries[b] for b in blocks) == pytest.approx(merges.time[(i, j)])
                assert all(max(chain.geometry(b).kernel) <= 5 for b in blocks if b[1] - b[0] > 1)


@pytest.mark.parametrize(("seed", "layers"), [(0, 8), (1, 9), (2, 10)])
def test_stage_two_matches_brute_force_over_all_activation_subsets(seed: int, layers: int) -> None:
    chain = _plain_chain(layers, seed)
    latency = measure_latency_table(chain, macs_ms)
    merges = optimal_merges(latency)
    importance = _random_importance(chain, latency, seed)
    steps_per_ms = 200.0
    acts = chain.activation_boundaries()
    plans = []
    for kept in itertools.chain.from_iterable(itertools.combinations(acts, r) for r in range(len(acts) + 1)):
        spans = list(itertools.pairwise([0, *kept, chain.layers]))
        steps = sum(time_steps(merges.time[s], steps_per_ms) for s in spans)
        plans.append((sum(importance.entries[s] for s in spans), -steps, kept))
    fastest = min(-p[1] for p in plans) / steps_per_ms
    slowest = max(-p[1] for p in plans) / steps_per_ms
    for budget in np.linspace(fastest, slowest, 5):
        budget_steps = math.floor(budget * steps_per_ms + 1e-9)
        best = max(p for p in plans if -p[1] <= budget_steps)
        plan = solve(chain, latency, importance, float(budget), merges=merges, steps_per_ms=steps_per_ms)
        assert plan.importance == pytest.approx(best[0], abs=1e-9)
        assert plan.kept_activations == best[2] or plan.importance == pytest.approx(best[0], abs=1e-12)
        kept_spans = list(itertools.pairwise([0, *plan.kept_activations, chain.layers]))
        assert sum(time_steps(merges.time[s], steps_per_ms) for s in kept_spans) == -best[1]  # ties: the faster
        assert plan.predicted_ms <= budget + 1e-9
        assert set(plan.kept_activations) | set(plan.removed_activations) == set(acts)


def test_budget_is_honoured_and_an_impossible_one_refused() -> None:
    chain = _plain_chain(10, 3)
    latency = measure_latency_table(chain, macs_ms)
    importance = _random_importance(chain, latency, 3)
    for budget in (0.3, 0.2, 0.15):
        try:
            plan = solve(chain, latency, importance, budget, steps_per_ms=100)
        except SpecError:
            continue
        assert plan.predicted_ms <= budget
    with pytest.raises(SpecError, match="fastest predicted"):
        solve(chain, latency, importance, 0.001, steps_per_ms=100)


def test_equal_importance_gives_the_fastest_plan() -> None:
    chain = _plain_chain(8, 4)
    latency = measure_latency_table(chain, macs_ms)
    merges = optimal_merges(latency)
    flat = ImportanceTable({s: 0.0 for s in importance_spans(chain, merges)})
    plan = solve(chain, latency, flat, 100.0, steps_per_ms=1000)
    assert plan.predicted_ms == pytest.approx(merges.time[(0, chain.layers)], abs=1e-3) or plan.predicted_ms <= min(
        sum(merges.time[s] for s in itertools.pairwise([0, *kept, chain.layers]))
        for r in range(3) for kept in itertools.combinations(chain.activation_boundaries(), r)
    ) + 1e-3


def test_plan_round_trips_through_json() -> None:
    plan = DepthCompressionPlan(5, ((0, 2), (2, 5)), (2,), (1, 3, 4), 0.5, -1.25, 0.6)
    assert DepthCompressionPlan.from_json(plan.to_json()) == plan
    moved = DepthCompressionPlan(5, ((0, 3), (3, 5)), (), (1, 2, 4), 0.5, -1.0, 0.6, (3,))
    assert DepthCompressionPlan.from_json(moved.to_json()) == moved
    with pytest.raises(SpecError):
        DepthCompressionPlan.from_json({"layers": 5})


def _span_score(network: ChainNetwork) -> float:
    """A synthetic importance: fewer kept activations and wider merged kernels score lower."""
    removed = sum(isinstance(a, nn.Identity) for a in network.acts)
    merged = sum(len(b.convs) - 1 for b in network.blocks if isinstance(b, PaddedSpan))
    return 1.0 - 0.05 * removed - 0.01 * merged


@pytest.mark.slow
def test_mobilenet_like_network_end_to_end(mobile_arch: Architecture, tmp_path) -> None:
    torch.manual_seed(0)
    model = mobile_arch.build()
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 8, 8))  # running statistics that are not the initial ones
    model.eval()
    chain = extract_chain(model)
    latency = measure_latency_table(chain, macs_ms, max_kernel=7)
    merges = optimal_merges(latency)
    importance = measure_importance_table(chain, merges, _span_score, penalty=1.2)
    full = solve(chain, latency, importance, 10.0, merges=merges, steps_per_ms=1000)
    original_ms = sum(latency.entries[(k - 1, k)] for k in range(1, chain.layers + 1)) + latency.fixed_ms
    plan = solve(chain, latency, importance, 0.6 * original_ms, merges=merges, steps_per_ms=1000)
    assert plan.predicted_ms <= 0.6 * original_ms < original_ms
    assert plan.removed_activations and len(plan.blocks) < chain.layers
    assert full.importance >= plan.importance

    applied = apply_plan(model, plan)
    assert applied.removed.training is False
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(applied.merged(x), applied.removed(x), atol=ATOL)
    convs = [m for m in applied.merged.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(plan.blocks)
    kept = sum(not isinstance(a, nn.Identity) for a in applied.merged.acts)
    assert kept == len(plan.kept_activations) + chain.has_activation(chain.layers)

    applied.removed.train()  # fine-tuning changes the weights; merging afterwards still matches exactly
    optimizer = torch.optim.SGD(applied.removed.parameters(), lr=0.05)
    for _ in range(3):
        loss = applied.removed(torch.randn(8, 1, 8, 8)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    applied.removed.eval()
    deployed = merge_network(applied.removed)
    with torch.no_grad():
        assert torch.allclose(deployed(x), applied.removed(x), atol=ATOL)
    path = export_onnx(deployed, x[:1], tmp_path / "merged.onnx")
    assert path.exists()


def test_apply_plan_refuses_a_plan_for_another_network(mobile_arch: Architecture) -> None:
    plan = DepthCompressionPlan(4, ((0, 4),), (), (), 0.1, 0.0, 1.0)
    with pytest.raises(SpecError, match="11"):
        apply_plan(mobile_arch.build(), plan)


@pytest.mark.slow
def test_fine_tune_score_trains_and_scores_on_digits(mobile_arch: Architecture) -> None:
    torch.manual_seed(0)
    chain = extract_chain(mobile_arch.build().eval())
    latency = measure_latency_table(chain, macs_ms, max_span=3)
    merges = optimal_merges(latency)
    score = FineTuneScore(load_dataset("digits"), TrainConfig(epochs=2, lr=1e-2), train_samples=None, val_samples=256)
    spans = [(0, 1), (1, 2), (1, 4)]
    table = measure_importance_table(chain, merges, score, penalty=1.0, spans=spans)
    assert set(table.scores) == set(spans)
    assert all(0.0 <= s <= 1.0 for s in table.scores.values())
    assert max(table.scores.values()) > 0.3  # two epochs from scratch learn digits well above chance (0.1)
    minimal_mean = np.mean([table.scores[s] for s in [(0, 1), (1, 2)]])
    assert table.entries[(1, 4)] == pytest.approx(table.scores[(1, 4)] - minimal_mean)


def test_the_fastest_plan_moves_removed_activations_to_linear_bottlenecks(user_models, randomise_bn) -> None:
    torch.manual_seed(0)
    model = randomise_bn(user_models["mobilenetv2"]())
    chain = extract_chain(model, (1, 12, 12)).with_moved_activations()
    latency = measure_latency_table(chain, macs_ms, max_span=4, max_kernel=7)
    merges = optimal_merges(latency)
    calls: list[ChainNetwork] = []

    def score(network: ChainNetwork) -> float:
        calls.append(network)
        return _span_score(network)

    spans = importance_spans(chain, merges, 4)
    importance = measure_importance_table(chain, merges, score, spans=spans)
    unchanged = [s for s in spans if not chain.removed_by(s)]
    assert len(unchanged) > 1 and len(calls) == len(spans) - len(unchanged) + 1  # the source scored once
    assert len({importance.scores[s] for s in unchanged}) == 1
    flat = ImportanceTable(dict.fromkeys(importance.entries, 0.0))
    plan = solve(chain, latency, flat, 100.0, merges=merges, steps_per_ms=1000)
    assert plan.inserted_activations and set(plan.inserted_activations) <= set(chain.insertable)
    ends = dict((j, i) for i, j in itertools.pairwise([0, *sorted({*plan.kept_activations,
                                                                     *plan.inserted_activations}), chain.layers]))
    assert all(chain.removed_by((ends[j], j)) for j in plan.inserted_activations)

    applied = apply_plan(model, plan, (1, 12, 12))
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(applied.merged(x), applied.removed(x), atol=ATOL, rtol=ATOL)
    acts = sum(not isinstance(a, nn.Identity) for a in applied.merged.acts)
    assert acts == len(plan.kept_activations) + len(plan.inserted_activations) + chain.has_activation(chain.layers)
