"""Learned latency predictors on synthetic devices whose latency is a known function of the NB201 cell."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from archetype.errors import SpecError
from archetype.searchspace import Image, get_space, list_spaces
from archetype.searchspace.nb201 import NB201_OPS, format_nb201
from archetype.worker.latency_features import FBNetFeaturizer, NB201Featurizer, SpaceFeaturizer, nb201_live_edges
from archetype.worker.latency_learned import (
    MIN_FIT_SAMPLES,
    TransferLatencyPredictor,
    fit_learned_predictor,
    make_model,
    share_within,
    spearman,
    table_source,
)

COST = {"none": 0.0, "skip_connect": 0.05, "nor_conv_1x1": 0.4, "nor_conv_3x3": 1.3, "avg_pool_3x3": 0.3}
CELLS = [format_nb201(ops) for ops in itertools.islice(itertools.product(NB201_OPS, repeat=6), 0, None, 7)]


def device_ms(arch: str, scale: float = 1.0, power: float = 1.0) -> float:
    """A device whose latency sums the live edges' costs, with an extra cost per node that sums two inputs."""
    from archetype.searchspace.nb201 import NB201_EDGES, parse_nb201

    ops = parse_nb201(arch)
    live = nb201_live_edges(ops)
    work = sum(COST[op] for op, alive in zip(ops, live, strict=True) if alive)
    merges = sum(max(0, sum(1 for k, (_, j) in enumerate(NB201_EDGES) if j == n and live[k]) - 1) for n in (1, 2, 3))
    return scale * (0.5 + work + 0.15 * merges) ** power


def test_live_edges_drop_what_cannot_reach_the_output():
    assert nb201_live_edges(["nor_conv_3x3"] * 6) == [True] * 6
    # node 1 is fed but feeds nothing: edge 0->1 computes for no one
    assert nb201_live_edges(["nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1", "none", "none"]) == [
        False, False, False, True, False, False]
    assert not any(nb201_live_edges(["skip_connect"] * 3 + ["none"] * 3))


def test_features_have_one_shape_per_space():
    nb = NB201Featurizer()
    shapes = {(f.vector.shape, f.nodes.shape, f.adjacency.shape) for f in (nb.encode(a) for a in CELLS[:50])}
    assert len(shapes) == 1 and next(iter(shapes))[2] == (8, 8)
    fb = FBNetFeaturizer()
    small, large = fb.encode(["skip"] * 22), fb.encode(["k5_e6"] * 22)
    assert small.vector.shape == large.vector.shape and small.adjacency.sum() == 23
    assert large.vector[-3] > small.vector[-3] == 0.0  # the network's MACs by formula
    with pytest.raises(SpecError, match="22 layers"):
        fb.encode(["skip"] * 21)


@pytest.mark.parametrize("model", ["gbdt", "gcn"])
def test_each_family_learns_a_non_additive_device(model):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(CELLS))
    train, test = [CELLS[i] for i in order[:600]], [CELLS[i] for i in order[600:1400]]
    fitted = fit_learned_predictor(NB201Featurizer(), train, [device_ms(a) for a in train], models=[model])
    truth = np.array([device_ms(a) for a in test])
    predicted = fitted.predict_ms(test)
    assert fitted.name == model
    assert share_within(predicted, truth) > 0.9 and spearman(predicted, truth) > 0.95


def test_the_family_is_chosen_by_held_out_error():
    rng = np.random.default_rng(1)
    cells = [CELLS[i] for i in rng.permutation(len(CELLS))[:200]]
    fitted = fit_learned_predictor(NB201Featurizer(), cells, [device_ms(a) for a in cells], models=["gbdt", "gcn"])
    assert set(fitted.validation) == {"gbdt", "gcn", "gbdt_error", "gcn_error"}
    best = max(("gbdt", "gcn"), key=lambda m: (fitted.validation[m], -fitted.validation[m + "_error"]))
    assert fitted.name == best


def test_too_few_samples_or_an_unknown_family_are_refused():
    cells = CELLS[: MIN_FIT_SAMPLES - 1]
    with pytest.raises(SpecError, match=f"mine.csv: {MIN_FIT_SAMPLES - 1} usable .* at least {MIN_FIT_SAMPLES}"):
        fit_learned_predictor(NB201Featurizer(), cells, [1.0] * len(cells), source="mine.csv")
    zeros = CELLS[:30]
    with pytest.raises(SpecError, match="0 usable"):
        fit_learned_predictor(NB201Featurizer(), zeros, [0.0] * 30)
    with pytest.raises(SpecError, match="unknown latency model 'forest'"):
        make_model("forest")


def test_twenty_shots_transfer_what_other_devices_know():
    sources = {"a": [device_ms(c) for c in CELLS], "b": [device_ms(c, 3.0, 1.2) for c in CELLS]}
    columns = {k: np.array(v) for k, v in sources.items()}
    new = np.array([device_ms(c, 0.7, 0.9) for c in CELLS])
    shots = list(np.random.default_rng(2).permutation(len(CELLS))[:20])
    transfer = TransferLatencyPredictor(table_source(columns, int), ["a", "b"]).fit(shots, new[shots])
    rest = [i for i in range(len(CELLS)) if i not in set(shots)]
    predicted = transfer.predict_ms(rest)
    assert spearman(predicted, new[rest]) > 0.99 and share_within(predicted, new[rest]) > 0.9
    # a learned model from the same 20 shots alone does worse: the transfer is what helps
    alone = fit_learned_predictor(NB201Featurizer(), [CELLS[i] for i in shots], new[shots], models=["gbdt"])
    assert share_within(alone.predict_ms([CELLS[i] for i in rest]), new[rest]) < share_within(predicted, new[rest])
    with pytest.raises(SpecError, match="2 usable"):
        TransferLatencyPredictor(table_source(columns, int), ["a", "b"]).fit(shots[:2], new[shots[:2]])


@pytest.mark.parametrize("name", list_spaces())
def test_every_predefined_space_is_featurized(name):
    """Chain and cell spaces alike (a cell's sum nodes carry no cost of their own): one shape per space."""
    space = get_space(name, Image(3, 32, 32), 10)
    rng = np.random.default_rng(0)
    featurizer = SpaceFeaturizer(space)
    feats = [featurizer.encode(space.sample(rng)) for _ in range(3)]
    assert len({f.vector.shape for f in feats}) == 1 and len({f.nodes.shape[1] for f in feats}) == 1
    assert all(np.isfinite(f.vector).all() and f.nodes.shape[0] == f.adjacency.shape[0] for f in feats)
    assert any(f.nodes[:, -3].max() > 0 for f in feats)  # some node's MACs reach the features
