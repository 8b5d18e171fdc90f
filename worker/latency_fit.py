"""Fitting a device's latency predictor from a user's table of measured architectures, with or without transfer.

What ``archetype latency fit --csv`` does: read the table, fit a learned
predictor on the device column (or, with ``--shots`` and ``--pretrained-on``, a
transfer predictor on a few of its rows, the other devices' columns read from the
same table or from the shared published table of its space), score it on the rows
it did not see, and write the predicted latency of every architecture.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archetype.errors import SpecError
from archetype.worker.latency_features import featurizer_for
from archetype.worker.latency_learned import (
    TransferLatencyPredictor,
    fit_learned_predictor,
    share_within,
    spearman,
    table_source,
    usable_latencies,
)
from archetype.worker.published_table import LATENCY_PREFIX, PublishedTable, load_published_table, shared_benchmarks_dir

_SHARED_FILES = {"nb201": "nb201.csv.gz", "fbnet": "fbnet_latency.json.gz"}


@dataclass(frozen=True)
class DeviceFit:
    """A device's fitted predictor, how it was fitted, and how it did on the measured rows it did not see."""

    source: str
    device: str
    method: str  # "gbdt", "gcn" or "transfer"
    samples: int  # measured rows it was fitted from
    held_out: int  # measured rows it was scored on
    within_10: float
    within_5: float
    spearman: float
    seconds: float
    pretrained_on: tuple[str, ...]
    validation: dict[str, float]  # each learned family's share within ±10% on the rows held out to choose it
    archs: tuple[str, ...]  # every architecture of the table ...
    predicted_ms: tuple[float, ...]  # ... and its predicted latency

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("archs", "predicted_ms")}
        data["pretrained_on"] = list(self.pretrained_on)
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in data.items()}


def _source_columns(table: PublishedTable, devices: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
    """The pre-training devices' latencies for the table's rows: its own columns, else the shared table's."""
    own = {LATENCY_PREFIX + d in table.columns for d in devices}
    if own == {True}:
        return {d: table.column(d) for d in devices}, str(table.path)
    shared = shared_benchmarks_dir()
    if shared is None:
        missing = next(d for d in devices if LATENCY_PREFIX + d not in table.columns)
        raise SpecError(f"{table.path}: no column {LATENCY_PREFIX}{missing} and no shared benchmark table to "
                        "pre-train from (set ARCHETYPE_BENCHMARKS)")
    published = load_published_table(shared / _SHARED_FILES[table.space])
    rows = [published.row(a) for a in table.archs]
    return {d: published.column(d)[rows] for d in devices}, str(published.path)


def fit_device(
    path: str | Path,
    device: str,
    *,
    shots: int | None = None,
    pretrained_on: Sequence[str] = (),
    seed: int = 0,
    models: Sequence[str] = ("gbdt", "gcn"),
) -> DeviceFit:
    """Fit ``device``'s latency from the table at ``path``; SpecError names the file, row or column at fault."""
    table = load_published_table(path)
    y = table.column(device)
    measured = np.flatnonzero(usable_latencies(y))
    rng = np.random.default_rng(seed)
    if pretrained_on:
        if device in pretrained_on:
            raise SpecError(f"--pretrained-on lists {device!r}, the device being fitted")
        if shots is None:
            shots = 20
        if len(measured) < shots:
            raise SpecError(f"{path}: column {LATENCY_PREFIX}{device} has {len(measured)} measured rows, "
                            f"--shots {shots} needs that many")
        columns, origin = _source_columns(table, pretrained_on)
        chosen = rng.permutation(measured)[:shots]
        predictor = TransferLatencyPredictor(table_source(columns, int), pretrained_on)
        predictor.fit(list(chosen), y[chosen], source=f"{path}: column {LATENCY_PREFIX}{device}")
        everything = predictor.predict_ms(list(range(len(table))))
        method, seconds, validation = "transfer", predictor.fit_seconds, {}
    else:
        featurizer = featurizer_for(table.space)
        feats = [featurizer.encode(a) for a in table.archs]
        chosen = rng.permutation(measured)[: shots or len(measured)]
        fitted = fit_learned_predictor(featurizer, [feats[i] for i in chosen], y[chosen], models=models, seed=seed,
                                       features=lambda f: f, source=f"{path}: column {LATENCY_PREFIX}{device}")
        everything = fitted.predict_features(feats)
        method, seconds, origin, validation = fitted.name, fitted.fit_seconds, "", fitted.validation
    held = np.setdiff1d(measured, chosen)
    truth, guess = y[held], everything[held]
    return DeviceFit(
        source=str(path), device=device, method=method, samples=len(chosen), held_out=len(held),
        within_10=share_within(guess, truth), within_5=share_within(guess, truth, 0.05),
        spearman=spearman(guess, truth) if len(held) > 1 else float("nan"), seconds=seconds,
        pretrained_on=tuple(pretrained_on) if origin else (), validation=validation, archs=table.archs,
        predicted_ms=tuple(float(v) for v in everything),
    )


def write_predictions(path: str | Path, fit: DeviceFit) -> None:
    """Write ``arch,predicted_latency_ms_<device>`` for every architecture, whole or not at all."""
    path = Path(path)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["arch", f"predicted_{LATENCY_PREFIX}{fit.device}"])
    writer.writerows((a, f"{v:.6g}") for a, v in zip(fit.archs, fit.predicted_ms, strict=True))
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w", newline="") as out:
            out.write(text.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        raise SpecError(f"{path}: cannot write the predictions: {exc.strerror or exc}") from None
