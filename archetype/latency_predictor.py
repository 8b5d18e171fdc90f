"""LatencyPredictor: a latency table's sum, corrected by a model learned from whole measured architectures.

A table misses what happens between operators: fused kernels, memory traffic,
skip additions. The predictor learns ``log(measured / table)`` from the
architecture's features (``SpaceFeaturizer``: encoding, per-node MACs, parameters
and activations, the table's own log prediction) with gradient boosting or a
graph network, whichever predicts held-out architectures better, and multiplies
the table's prediction back by it.
Its training data are the measured architectures kept in the store
(``latency_samples``); the fitted model is not stored but refitted from them
(seeded, in well under a second), so no pickles outlive a library version.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from archetype.errors import ArchetypeError
from archetype.latency_tables import LatencyTable, OperatorInstance, arch_instances
from archetype.runtime.measure import Latency
from archetype.runtime.targets import Target
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.store import LatencyRecord
from archetype.worker.latency_features import SpaceFeaturizer
from archetype.worker.latency_learned import (
    LEARNED_MODELS,
    MIN_FIT_SAMPLES,
    LearnedLatencyPredictor,
    fit_learned_predictor,
)

MIN_SAMPLES = MIN_FIT_SAMPLES
"""Fewer measured architectures than this and the predictor is the table alone."""

GRAPH_MIN_SAMPLES = 50
"""From this many measured architectures on, the graph network competes with gradient boosting."""

WITHIN = 0.10
"""A prediction is good when it lies within this share of the measured latency."""


class LatencyPredictor:
    """Predicts an architecture's latency on the table's target: table sum + overhead, times a learned correction."""

    def __init__(self, table: LatencyTable, space: SearchSpace, seed: int = 0) -> None:
        self.table = table
        self.space = space
        self.seed = seed
        self.featurizer = SpaceFeaturizer(space, table.predict)
        self._model: LearnedLatencyPredictor | None = None

    @property
    def learned(self) -> bool:
        """Whether a correction has been fitted (else the table alone predicts)."""
        return self._model is not None

    def fit(self, archs: Sequence[Architecture], measured_ms: Sequence[float]) -> LatencyPredictor:
        """Learn the correction from measured architectures whose instances are all in the table."""
        kept, ratios = [], []
        for arch, measured in zip(archs, measured_ms, strict=True):
            table_ms = self.table.predict(arch)
            if table_ms is None or table_ms <= 0 or not measured > 0:
                continue
            kept.append(arch)
            ratios.append(measured / table_ms)
        if len(kept) < MIN_SAMPLES:
            self._model = None
            return self
        models = LEARNED_MODELS if len(kept) >= GRAPH_MIN_SAMPLES else ("gbdt",)
        self._model = fit_learned_predictor(self.featurizer, kept, ratios, models=models, seed=self.seed,
                                            source=f"latency samples of {self.space.name}")
        return self

    def fit_stored(self) -> LatencyPredictor:
        """Fit on the architectures of this space measured on this target and device, as stored."""
        samples = self.table.store.latency_samples(self.table.target.name, self.table.device, self.space.name)
        archs = [self.space.architecture_from_json(s.item) for s in samples]
        return self.fit(archs, [s.median_ms for s in samples])

    def __call__(self, arch: Architecture) -> float | None:
        """The predicted latency in ms; None when an instance of ``arch`` is not in the table."""
        table_ms = self.table.predict(arch)
        if table_ms is None or self._model is None or table_ms <= 0:
            return table_ms
        return table_ms * float(self._model.predict_ms([arch])[0])

    @property
    def validation(self) -> dict[str, float]:
        """Each family's share within ±10% (and median error) on the held-out samples it was chosen by."""
        return dict(self._model.validation) if self._model is not None else {}

    @property
    def model_name(self) -> str | None:
        """The learned family that corrects the table ("gbdt" or "gcn"), None when the table predicts alone."""
        return self._model.name if self._model is not None else None


def measure_architecture(target: Target, arch: Architecture) -> Latency | None:
    """One measurement of a whole architecture by the target's protocol; None when it fails to build or run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = arch.build()
    try:
        return target.measure(model, arch.input)
    except Exception:  # the caller counts it as an architecture not measured
        return None


def measure_samples(
    table: LatencyTable,
    space: SearchSpace,
    archs: Sequence[Architecture],
    on_arch: Callable[[Architecture], None] | None = None,
) -> dict[str, float]:
    """The measured latency of each architecture by key: stored ones are read, the others measured and stored.

    An architecture that fails to build, export or run is left out of the answer.
    """
    target, store = table.target, table.store
    known = {s.key: s.median_ms for s in store.latency_samples(target.name, table.device, space.name)}
    measured: list[LatencyRecord] = []
    try:
        for arch in archs:
            if arch.key not in known:
                latency = measure_architecture(target, arch)
                if latency is not None:
                    measured.append(LatencyRecord(arch.key, arch.to_json(), latency.median_ms, latency.spread))
                    known[arch.key] = latency.median_ms
            if on_arch is not None:
                on_arch(arch)
    finally:  # an interrupted check keeps what it measured
        if measured:
            store.put_latency_samples(target.name, table.device, space.name, measured)
    return {arch.key: known[arch.key] for arch in archs if arch.key in known}


def draw_architectures(space: SearchSpace, n: int, seed: int = 0) -> list[Architecture]:
    """``n`` distinct architectures drawn uniformly (fewer only if the space has fewer)."""
    rng = np.random.default_rng(seed)
    drawn: dict[str, Architecture] = {}
    for _ in range(n * 20):
        if len(drawn) == n:
            break
        arch = space.sample(rng)
        drawn.setdefault(arch.key, arch)
    return list(drawn.values())


@dataclass(frozen=True)
class PredictionCheck:
    """How well latency is predicted on measured architectures of a space: shares within ±10% of measured."""

    space: str
    target: str
    architectures: int  # drawn, predicted and measured
    not_measured: int  # drawn but left out: an instance or the whole network failed on the target
    overhead_ms: float
    within_table: float  # share predicted within ±10% by the table alone
    within_predictor: float  # share within ±10% by table + learned correction, each predicted by a model
    # fitted without it (k-fold hold-out)
    median_error_table: float  # median |predicted / measured - 1|
    median_error_predictor: float
    folds: int
    seconds: float
    instances_measured: int  # operator instances the check had to add to the table
    outside: int = 0  # architectures the predictor misses by more than ±10% (after any re-measuring)
    outside_noisy: int = 0  # of those, how many whose own measurement's spread exceeds half the tolerance
    remeasured: int = 0  # outliers measured a second time (the lower of the two kept)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_predictions(
    table: LatencyTable,
    space: SearchSpace,
    n: int,
    *,
    seed: int = 0,
    folds: int = 5,
    on_arch: Callable[[Architecture], None] | None = None,
    on_missing: Callable[[int], None] | None = None,
    on_instance: Callable[[OperatorInstance], None] | None = None,
    remeasure_outliers: bool = False,
) -> PredictionCheck:
    """Measure ``n`` random architectures and compare them with the table's and the predictor's predictions.

    Instances of the drawn architectures missing from the table are measured
    first (``on_missing`` gets their number, ``on_instance`` is called after
    each, ``on_arch`` after each architecture). The predictor's figure is a ``folds``-fold hold-out: each
    architecture is predicted by a model fitted on the other folds only. With
    ``remeasure_outliers`` each architecture missed by more than ±10% is measured
    once more, the lower of its two latencies is kept (interference only slows a
    run down), and the hold-out is repeated.
    """
    start = time.perf_counter()
    archs = draw_architectures(space, n, seed)
    overhead = table.measure_overhead()
    instances = {inst.key: inst for arch in archs for inst in arch_instances(arch)}
    missing = table.missing(instances.values())
    if on_missing is not None:
        on_missing(len(missing))
    failed = table.ensure(missing, on_instance=on_instance)
    usable = [arch for arch in archs if table.predict(arch) is not None]
    measured = measure_samples(table, space, usable, on_arch)
    if not measured:
        raise ArchetypeError(f"none of the {len(archs)} architectures drawn from {space.name!r} could be measured "
                             f"on {table.target.name}; operator instances that failed: {failed or 'none'}")
    usable = [arch for arch in usable if arch.key in measured]
    truth = np.array([measured[arch.key] for arch in usable])
    by_table = np.array([table.predict(arch) for arch in usable])

    by_predictor = _hold_out(table, space, usable, truth, by_table, seed, folds)
    remeasured = 0
    if remeasure_outliers:
        again: list[LatencyRecord] = []
        for i in np.flatnonzero(np.abs(by_predictor / truth - 1.0) > WITHIN):
            latency = measure_architecture(table.target, usable[i])
            if latency is not None and latency.median_ms < truth[i]:
                truth[i] = latency.median_ms
                again.append(LatencyRecord(usable[i].key, usable[i].to_json(), latency.median_ms, latency.spread))
            remeasured += 1
        if again:
            table.store.put_latency_samples(table.target.name, table.device, space.name, again)
        by_predictor = _hold_out(table, space, usable, truth, by_table, seed, folds)
    spreads = {s.key: s.spread for s in table.store.latency_samples(table.target.name, table.device, space.name)}
    outside = np.abs(by_predictor / truth - 1.0) > WITHIN
    noisy = np.array([spreads.get(arch.key, 0.0) > WITHIN / 2 for arch in usable])
    return PredictionCheck(
        space=space.name,
        target=table.target.name,
        architectures=len(usable),
        not_measured=len(archs) - len(usable),
        overhead_ms=overhead,
        within_table=_share_within(by_table, truth),
        within_predictor=_share_within(by_predictor, truth),
        median_error_table=_median_error(by_table, truth),
        median_error_predictor=_median_error(by_predictor, truth),
        folds=folds,
        seconds=time.perf_counter() - start,
        instances_measured=len(missing) - len(failed),
        outside=int(outside.sum()),
        outside_noisy=int((outside & noisy).sum()),
        remeasured=remeasured,
    )


def _hold_out(table: LatencyTable, space: SearchSpace, archs: Sequence[Architecture], truth: np.ndarray,
              by_table: np.ndarray, seed: int, folds: int) -> np.ndarray:
    """Each architecture's latency predicted by a predictor fitted on the other folds."""
    predicted = by_table.copy()
    order = np.random.default_rng(seed).permutation(len(archs))
    for fold in np.array_split(order, max(1, min(folds, len(archs)))):
        held = set(fold.tolist())
        train = [i for i in range(len(archs)) if i not in held]
        predictor = LatencyPredictor(table, space, seed).fit([archs[i] for i in train], truth[train])
        for i in fold:
            predicted[i] = predictor(archs[i])
    return predicted


def _share_within(predicted: np.ndarray, measured: np.ndarray) -> float:
    if len(measured) == 0:
        return 0.0
    return float(np.mean(np.abs(predicted / measured - 1.0) <= WITHIN))


def _median_error(predicted: np.ndarray, measured: np.ndarray) -> float:
    if len(measured) == 0:
        return math.nan
    return float(np.median(np.abs(predicted / measured - 1.0)))
