"""Learned latency predictors over architecture features: gradient boosting or a small graph network, and transfer.

Both models predict log-latency from a ``LatencyFeaturizer``'s output; which one
serves is chosen by its error on held-out measured architectures. A
``TransferLatencyPredictor`` fits a new device from a few measured architectures
by regressing its log-latency on the log-latencies other devices have for the
same architectures (the device is described by how it relates to devices already
measured, as HELP's device embedding does from a probe set). Models are refitted
from measurements, never pickled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.training import torch_threads
from archetype.worker.latency_features import ArchFeatures, LatencyFeaturizer

LEARNED_MODELS = ("gbdt", "gcn")
"""The model families a learned predictor chooses among."""

MIN_FIT_SAMPLES = 10
"""Fewest measured architectures a learned predictor is fitted from."""

MIN_SHOTS = 3
"""Fewest measured architectures of a new device a transfer predictor is fitted from."""


def share_within(predicted: np.ndarray, measured: np.ndarray, tolerance: float = 0.10) -> float:
    """The share of predictions within ``tolerance`` of the measured value."""
    measured = np.asarray(measured, dtype=float)
    if measured.size == 0:
        return math.nan
    return float(np.mean(np.abs(np.asarray(predicted) / measured - 1.0) <= tolerance))


def spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    if len(measured) < 2 or np.ptp(predicted) == 0 or np.ptp(measured) == 0:
        return math.nan
    return float(spearmanr(predicted, measured)[0])


def usable_latencies(latencies_ms: Sequence[float]) -> np.ndarray:
    """A mask of the latencies a log-latency model can learn from (finite and positive)."""
    values = np.asarray(latencies_ms, dtype=float)
    return np.isfinite(values) & (values > 0)


class GBDTLatencyModel:
    """Gradient-boosted trees on the flat feature vector."""

    name = "gbdt"

    def __init__(self, seed: int = 0, trees: int = 500, depth: int = 4) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        self._model = GradientBoostingRegressor(n_estimators=trees, max_depth=depth, learning_rate=0.05,
                                                subsample=0.8, random_state=seed)

    def fit(self, feats: Sequence[ArchFeatures], y: np.ndarray) -> GBDTLatencyModel:
        self._model.fit(np.stack([f.vector for f in feats]), y)
        return self

    def predict(self, feats: Sequence[ArchFeatures]) -> np.ndarray:
        return np.asarray(self._model.predict(np.stack([f.vector for f in feats])))


class _GraphNetwork(nn.Module):
    """Message passing along and against the edges, mean and sum pooling, then an MLP with the flat vector."""

    def __init__(self, node_dim: int, vector_dim: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(node_dim, hidden)
        self.forward_msg = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.backward_msg = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.self_msg = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(2 * hidden + vector_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, nodes: torch.Tensor, fwd: torch.Tensor, bwd: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(nodes))  # (B, N, H)
        for f, b, s in zip(self.forward_msg, self.backward_msg, self.self_msg, strict=True):
            h = torch.relu(s(h) + f(fwd @ h) + b(bwd @ h)) + h
        pooled = torch.cat([h.mean(dim=1), h.sum(dim=1) / 8.0, vec], dim=1)
        return self.head(pooled).squeeze(-1)


def _normalized(adjacency: np.ndarray) -> np.ndarray:
    """Row-normalised incoming adjacency of a batch (B, N, N): node j averages over its predecessors."""
    incoming = np.transpose(adjacency, (0, 2, 1))
    degree = incoming.sum(axis=2, keepdims=True)
    return incoming / np.maximum(degree, 1.0)


class GCNLatencyModel:
    """A small graph network over the architecture graph (BRP-NAS predicts latency with a GCN)."""

    name = "gcn"

    def __init__(self, seed: int = 0, epochs: int = 100, batch: int = 64) -> None:
        self.seed, self.epochs, self.batch = seed, epochs, batch
        self._net: _GraphNetwork | None = None
        self._scale: tuple[np.ndarray, np.ndarray, float, float] | None = None

    def _tensors(self, feats: Sequence[ArchFeatures]) -> tuple[torch.Tensor, ...]:
        assert self._scale is not None
        vec_mean, vec_std, _, _ = self._scale
        adjacency = np.stack([f.adjacency for f in feats])
        vectors = (np.stack([f.vector for f in feats]) - vec_mean) / vec_std
        return tuple(torch.as_tensor(a, dtype=torch.float32) for a in (
            np.stack([f.nodes for f in feats]), _normalized(adjacency),
            _normalized(np.transpose(adjacency, (0, 2, 1))), vectors))

    def fit(self, feats: Sequence[ArchFeatures], y: np.ndarray) -> GCNLatencyModel:
        vectors = np.stack([f.vector for f in feats])
        self._scale = (vectors.mean(axis=0), vectors.std(axis=0) + 1e-6, float(np.mean(y)), float(np.std(y)) + 1e-9)
        target = torch.as_tensor((y - self._scale[2]) / self._scale[3], dtype=torch.float32)
        tensors = self._tensors(feats)
        with torch.random.fork_rng(devices=[]), torch_threads(1):  # tiny matrices: one thread is fastest
            torch.manual_seed(self.seed)
            net = _GraphNetwork(tensors[0].shape[2], tensors[3].shape[1])
            steps = self.epochs * max(1, math.ceil(len(feats) / self.batch))
            optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
            generator = torch.Generator().manual_seed(self.seed)
            net.train()
            for _ in range(self.epochs):
                for rows in torch.randperm(len(feats), generator=generator).split(self.batch):
                    loss = nn.functional.mse_loss(net(*(t[rows] for t in tensors)), target[rows])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
        self._net = net.eval()
        return self

    def predict(self, feats: Sequence[ArchFeatures]) -> np.ndarray:
        assert self._net is not None and self._scale is not None
        with torch.no_grad(), torch_threads(1):
            out = self._net(*self._tensors(feats)).numpy()
        return out * self._scale[3] + self._scale[2]


def make_model(name: str, seed: int = 0) -> GBDTLatencyModel | GCNLatencyModel:
    """A fresh model of a family in ``LEARNED_MODELS``."""
    if name == "gbdt":
        return GBDTLatencyModel(seed)
    if name == "gcn":
        return GCNLatencyModel(seed)
    raise SpecError(f"unknown latency model {name!r}; one of {', '.join(LEARNED_MODELS)}")


@dataclass
class LearnedLatencyPredictor:
    """A fitted log-latency model with the featurizer it reads and how it was chosen."""

    featurizer: LatencyFeaturizer
    model: Any
    validation: dict[str, float] = field(default_factory=dict)  # family -> share within ±10% on validation
    fit_seconds: float = 0.0

    @property
    def name(self) -> str:
        return str(self.model.name)

    def predict_ms(self, items: Sequence[Any]) -> np.ndarray:
        """Predicted latency in ms of each architecture (or arch string)."""
        return np.exp(self.model.predict([self.featurizer.encode(item) for item in items]))

    def predict_features(self, feats: Sequence[ArchFeatures]) -> np.ndarray:
        """Predicted latency in ms from features already encoded."""
        return np.exp(self.model.predict(list(feats)))


def fit_learned_predictor(
    featurizer: LatencyFeaturizer,
    items: Sequence[Any],
    latencies_ms: Sequence[float],
    *,
    validation_items: Sequence[Any] | None = None,
    validation_ms: Sequence[float] | None = None,
    models: Sequence[str] = LEARNED_MODELS,
    seed: int = 0,
    features: Callable[[Any], ArchFeatures] | None = None,
    source: str = "the samples",
) -> LearnedLatencyPredictor:
    """Fit each model family on the measured pairs and keep the one with most validation predictions within ±10%.

    Without a validation set a tenth of the samples (at least two) is held out to
    choose, and the chosen family is refitted on all of them.
    """
    start = time.perf_counter()
    encode = features or featurizer.encode
    values = np.asarray(latencies_ms, dtype=float)
    keep = usable_latencies(values)
    train = [encode(item) for item, ok in zip(items, keep, strict=True) if ok]
    y = np.log(values[keep])
    if len(train) < MIN_FIT_SAMPLES:
        raise SpecError(f"{source}: {len(train)} usable measured architectures (finite, positive latency); "
                        f"a learned latency predictor needs at least {MIN_FIT_SAMPLES}")
    refit = validation_items is None
    if refit:
        order = np.random.default_rng(seed).permutation(len(train))
        held = order[: max(2, len(train) // 10)]
        rest = order[max(2, len(train) // 10):]
        val_feats, val_ms = [train[i] for i in held], np.exp(y[held])
        fit_feats, fit_y = [train[i] for i in rest], y[rest]
    else:
        vmask = usable_latencies(validation_ms if validation_ms is not None else [])
        val_feats = [encode(item) for item, ok in zip(validation_items or [], vmask, strict=True) if ok]
        val_ms = np.asarray(validation_ms, dtype=float)[vmask]
        fit_feats, fit_y = train, y
    scores: dict[str, float] = {}
    fitted: dict[str, Any] = {}
    for name in models:
        model = make_model(name, seed).fit(fit_feats, fit_y)
        predicted = np.exp(model.predict(val_feats)) if val_feats else np.array([])
        scores[name] = share_within(predicted, val_ms) if len(val_feats) else 0.0
        scores[name + "_error"] = float(np.median(np.abs(predicted / val_ms - 1))) if len(val_feats) else 0.0
        fitted[name] = model
    best = max(models, key=lambda m: (scores[m], -scores[m + "_error"]))
    model = make_model(best, seed).fit(train, y) if refit else fitted[best]
    return LearnedLatencyPredictor(featurizer, model, scores, time.perf_counter() - start)


class TransferLatencyPredictor:
    """A new device's log-latency as a ridge regression on other devices' log-latencies of the same architecture.

    ``source_ms(item)`` gives the architecture's latency on each pre-training
    device (read from their tables, or predicted by their learned predictors).
    """

    def __init__(self, source_ms: Callable[[Sequence[Any]], np.ndarray], devices: Sequence[str]) -> None:
        self.source_ms = source_ms
        self.devices = list(devices)
        self._model: Any = None
        self.fit_seconds = 0.0

    def _design(self, items: Sequence[Any]) -> np.ndarray:
        values = np.asarray(self.source_ms(items), dtype=float)
        return np.log(np.clip(values, 1e-6, None))

    def fit(self, items: Sequence[Any], latencies_ms: Sequence[float],
            source: str = "the shots") -> TransferLatencyPredictor:
        """Fit from a few measured architectures of the new device."""
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        start = time.perf_counter()
        values = np.asarray(latencies_ms, dtype=float)
        keep = usable_latencies(values)
        if keep.sum() < MIN_SHOTS:
            raise SpecError(f"{source}: {int(keep.sum())} usable measured architectures; transfer needs at least "
                            f"{MIN_SHOTS}")
        kept = [item for item, ok in zip(items, keep, strict=True) if ok]
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 25)))
        self._model = model.fit(self._design(kept), np.log(values[keep]))
        self.fit_seconds = time.perf_counter() - start
        return self

    def predict_ms(self, items: Sequence[Any]) -> np.ndarray:
        """Predicted latency in ms on the new device."""
        assert self._model is not None, "fit first"
        return np.exp(self._model.predict(self._design(items)))


def _floored(values: np.ndarray) -> np.ndarray:
    """A column with unusable entries (zero, negative, missing) raised to its smallest usable value."""
    ok = usable_latencies(values)
    floor = float(values[ok].min()) if ok.any() else 1.0
    return np.where(ok, values, floor)


def table_source(columns: Mapping[str, np.ndarray], row: Callable[[Any], int]) -> Callable[[Sequence[Any]], np.ndarray]:
    """Pre-training latencies read from measured columns: (items,) -> (len(items), devices)."""
    matrix = np.stack([_floored(np.asarray(v, dtype=float)) for v in columns.values()], axis=1)

    def lookup(items: Sequence[Any]) -> np.ndarray:
        return matrix[[row(item) for item in items]]

    return lookup
