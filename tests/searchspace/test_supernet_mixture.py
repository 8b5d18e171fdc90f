"""Balanced assignment of configurations to supernets: balancing, the moving-average update, state."""

from __future__ import annotations

import numpy as np
import pytest

from archetype.searchspace import Image, get_space
from archetype.searchspace.supernet_mixture import (
    BalancedAssignment,
    balance,
    downsampling_pattern,
    kl_to_uniform,
    softmax_rows,
)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_balancing_makes_the_marginal_near_uniform(k: int) -> None:
    rng = np.random.default_rng(k)
    weights = rng.uniform(0.2, 1.0, size=(40, k))
    weights[:, 0] += 0.5  # every configuration prefers supernet 0
    skewed = softmax_rows(100.0 * weights)
    assert kl_to_uniform(skewed.mean(axis=0)) > 0.1
    balanced = balance(skewed)
    assert kl_to_uniform(balanced.mean(axis=0)) <= 1e-4
    np.testing.assert_allclose(balanced.sum(axis=1), 1.0)
    assert (balanced >= 0).all()
    # balancing rescales columns: the configurations keep their order of preference between two supernets
    ratio = lambda p: p[:, 0] / p[:, 1]  # noqa: E731
    np.testing.assert_array_equal(np.argsort(ratio(balanced)), np.argsort(ratio(skewed)))


def test_update_is_a_moving_average_of_accuracy() -> None:
    assignment = BalancedAssignment(2)
    assignment.update("a", 1, 0.5)
    assert assignment.weights[0].tolist() == pytest.approx([1.0, 0.95])
    assignment.update("a", 1, 0.5)
    assert assignment.weights[0, 1] == pytest.approx(0.9 * 0.95 + 0.05)
    assert assignment.best("a") == 0
    assignment.update("a", 0, 0.0)
    assignment.update("a", 0, 0.0)
    assert assignment.best("a") == 1
    assert assignment.best("never seen") is None


def test_temperature_rises_from_1_to_100_and_sharpens_the_probabilities() -> None:
    assignment = BalancedAssignment(2)
    assert assignment.temperature(0.0) == pytest.approx(1.0)
    assert assignment.temperature(1.0) == pytest.approx(100.0)
    for config, better in (("a", 0), ("b", 1)):
        assignment.update(config, better, 1.0)
        assignment.update(config, 1 - better, 0.0)
    early, late = assignment.probabilities(0.0), assignment.probabilities(1.0)
    assert late[0, 0] > early[0, 0] > 0.5
    assert late[1, 1] > 0.99
    counts = np.bincount([assignment.sample("a", 1.0, np.random.default_rng(i)) for i in range(50)], minlength=2)
    assert counts[0] > 45


def test_state_round_trip_keeps_configurations_and_weights() -> None:
    space = get_space("pool-positions", Image(1, 8, 8), 10)
    rng = np.random.default_rng(0)
    assignment = BalancedAssignment(3)
    for arch in (space.sample(rng) for _ in range(20)):
        assignment.update(downsampling_pattern(arch), int(rng.integers(3)), float(rng.uniform()))
    restored = BalancedAssignment(3)
    restored.load_state_dict(assignment.state_dict())
    assert restored.configs == assignment.configs
    np.testing.assert_array_equal(restored.weights, assignment.weights)
    assert all(restored.best(c) == assignment.best(c) for c in assignment.configs)
    assert 1 < len(assignment.configs) <= 8  # three pooling positions: at most 2^3 patterns
