"""Tucker-2 and low-rank layers: exact at full rank, truncation within the tolerance, ranks adapting in training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from archetype.compress.tucker import (
    LowRankLinear,
    TuckerConfig,
    TuckerConv2d,
    decompose,
    rank_adaptive_fine_tune,
    truncated_rank,
    tucker_step,
)
from archetype.runtime.training import TrainConfig, evaluate_accuracy


def test_truncated_rank_is_the_smallest_within_the_tolerance() -> None:
    d = torch.tensor([10.0, 5.0, 1.0, 0.5, 0.1])
    for tau in (0.01, 0.05, 0.1, 0.3, 0.6):
        r = truncated_rank(d, tau)
        assert d[r:].norm() < tau * d.norm()
        assert r == 1 or d[r - 1 :].norm() >= tau * d.norm()
    assert truncated_rank(d, 0.0) == len(d)


@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 0, False)])
def test_tucker_conv_equals_the_conv_at_full_rank(stride: int, padding: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=stride, padding=padding, bias=bias)
    tucker = TuckerConv2d(conv, tau=0.0)
    assert tucker.ranks == (10, 6)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(tucker(x), conv(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tucker.full_weight(), conv.weight, atol=1e-5, rtol=1e-4)


def test_low_rank_linear_equals_the_linear_at_full_rank() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(12, 7)
    low = LowRankLinear(linear, tau=0.0)
    x = torch.randn(3, 12)
    torch.testing.assert_close(low(x), linear(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tau", [0.05, 0.2, 0.5])
def test_truncation_obeys_the_tolerance(tau: float) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1)
    tucker = TuckerConv2d(conv, tau=tau)
    for mode, rank in enumerate(tucker.ranks):
        d = torch.linalg.svdvals(conv.weight.detach().movedim(mode, 0).reshape(conv.weight.shape[mode], -1))
        assert d[rank:].norm() < tau * d.norm()  # what is dropped is within tau
        assert rank == 1 or d[rank - 1 :].norm() >= tau * d.norm()  # and no smaller rank is
    error = (tucker.full_weight() - conv.weight).norm() / conv.weight.norm()
    assert error <= math.sqrt(2) * tau  # two truncated modes


def test_rank_adaptation_changes_ranks_during_fine_tuning(digits, trained_conv_net) -> None:
    model = copy.deepcopy(trained_conv_net)
    initial = decompose(model, tau=0.5)
    assert initial
    history = rank_adaptive_fine_tune(model, digits, TrainConfig(epochs=2, lr=1e-3), adapt_every=10, tau=0.05)
    assert len(history) >= 3
    assert any(ranks != initial for ranks in history)  # the gradient directions earned rank back
    assert evaluate_accuracy(model, digits.val) > 0.4


def test_tucker_step_makes_a_cheaper_model(digits, trained_conv_net, context_for) -> None:
    context = context_for(tucker=TuckerConfig(initial_tau=0.5))
    model, report = tucker_step(trained_conv_net, context)
    assert any(isinstance(m, TuckerConv2d) for m in model.modules())
    assert context.latency_ms(model) < context.latency_ms(trained_conv_net)
    assert set(report.details["final_ranks"]) == set(report.details["initial_ranks"])
    assert model(digits.test.x[:2]).shape == (2, 10)
