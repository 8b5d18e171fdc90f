"""Tabular benchmarks: every architecture of a space measured once, looked up in microseconds.

Two kinds: a published table (NAS-Bench-201's CSV, read by ``published_table``) answers a
search of the ``nb201`` space from its accuracy and device-latency columns; and the
project's own digits table (``worker/tables/digits-tabular.json.gz``, rebuilt by
``bench/build_tabular.py``) holds accuracy, latency and size of each architecture of
``tabular_space()`` trained on digits under one protocol.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from archetype.errors import SpecError, TypeCheckError
from archetype.result import Result, TrialState
from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.nb201 import NB201_EDGES, NB201_OPS, format_fbnet, format_nb201
from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.types import Image, Vector
from archetype.worker.evaluator import Budget, EpochReport, Evaluator
from archetype.worker.published_table import PublishedTable, load_published_table

TABLE_VERSION = 1
DEFAULT_TABLE: Traversable = files("archetype.worker") / "tables" / "digits-tabular.json.gz"
"""The digits table, shipped as package data so that it is found outside a checkout (provenance: its README)."""


DIGITS_INPUT = Image(1, 8, 8)


def tabular_space(input_type: Image = DIGITS_INPUT, num_classes: int = 10) -> SearchSpace:
    """The 300-architecture convnet space of the digits table: conv-small with reduced domains."""
    return SearchSpace(
        name="tabular-digits",
        input=input_type,
        output=Vector(num_classes),
        description="conv-small with reduced domains, small enough to evaluate every architecture",
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": (8, 16), "kernel": 3, "stride": 1}),)),
            Slot(
                "stage1.block1",
                (
                    Candidate.of("conv_bn_act", {"width": (16, 32), "kernel": (3, 5), "stride": 1}),
                    Candidate.of("dwsep_conv", {"width": (16, 32), "kernel": 3, "stride": 1}),
                    Candidate.of("inverted_residual", {"width": (16, 32), "expand": 3, "kernel": 3, "stride": 1}),
                    Candidate.of("basic_block", {"width": (16, 32), "stride": 1}),
                ),
            ),
            Slot(
                "stage1.down",
                (
                    Candidate.of("pool", {"kind": ("max", "avg")}),
                    Candidate.of("conv_bn_act", {"width": 32, "kernel": 3, "stride": 2}),
                ),
                categories=("downsampling",),
            ),
            Slot(
                "stage2.block1",
                (
                    Candidate.of("identity"),
                    Candidate.of("conv_bn_act", {"width": (32, 64), "kernel": 3, "stride": 1}),
                    Candidate.of("dwsep_conv", {"width": (32, 64), "kernel": 3, "stride": 1}),
                ),
            ),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )


def enumerate_space(space: SearchSpace) -> Iterator[Architecture]:
    """Every well-typed architecture of ``space``, in a fixed order."""
    per_slot = []
    for slot in space.slots:
        choices = []
        for cand in slot.candidates:
            names = [name for name, _ in cand.domain]
            for values in itertools.product(*(v for _, v in cand.domain)):
                choices.append(Choice.of(slot.name, cand.op, dict(zip(names, values, strict=True))))
        per_slot.append(choices)
    for combo in itertools.product(*per_slot):
        arch = space.architecture(tuple(combo))
        try:
            arch.typing()
        except TypeCheckError:
            continue
        yield arch


@dataclass(frozen=True)
class TabularBenchmark:
    """Measured values of every architecture of a space, by architecture key."""

    space: SearchSpace
    values: Mapping[str, Mapping[str, float]]  # arch key -> accuracy, latency_ms, params, ...
    protocol: Mapping[str, Any]  # how the table was measured: data, epochs, seed, target, machine

    @classmethod
    def load(cls, path: str | Path | Traversable = DEFAULT_TABLE) -> TabularBenchmark:
        """Read a table written by ``bench/build_tabular.py``; SpecError if missing or of another version."""
        path = Path(path) if isinstance(path, str) else path
        try:
            with path.open("rb") as raw, gzip.open(raw, "rt") as f:
                data = json.load(f)
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the tabular benchmark: {exc}") from None
        if data.get("version") != TABLE_VERSION:
            raise SpecError(f"{path}: table version {data.get('version')!r}, expected {TABLE_VERSION}")
        space = tabular_space()
        return cls(space, {row["key"]: row["values"] for row in data["rows"]}, data["protocol"])

    def lookup(self, arch: Architecture) -> Result:
        """The stored result of ``arch``; FAILED if the table lacks it."""
        values = self.values.get(arch.key)
        if values is None:
            return Result.failed(f"architecture {arch.key} is not in the table of space '{self.space.name}'")
        return Result(TrialState.COMPLETE, dict(values), target=self.protocol.get("target"))

    def __len__(self) -> int:
        return len(self.values)


class TabularEvaluator(Evaluator):
    """Evaluates by table lookup: the budget is ignored, nothing is trained or timed."""

    def __init__(self, table: TabularBenchmark) -> None:
        self.table = table

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch: EpochReport | None = None) -> Result:
        return self.table.lookup(arch)


def write_table(path: str | Path, rows: list[dict[str, Any]], protocol: Mapping[str, Any]) -> None:
    """Write rows ``{key, arch, values}`` and the protocol atomically as gzipped JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = {"version": TABLE_VERSION, "protocol": dict(protocol), "rows": rows}
    with gzip.open(tmp, "wt") as f:
        json.dump(payload, f, separators=(",", ":"))
    tmp.replace(path)


PUBLISHED_DATA = {"cifar10": (Image(3, 32, 32), 10), "cifar100": (Image(3, 32, 32), 100),
                  "imagenet16": (Image(3, 16, 16), 120)}
"""Input and classes of the data sets NAS-Bench-201 reports, by the prefix of their column names."""


def published_input(metric: str) -> tuple[Image, int]:
    """The input type and classes of the data set a metric column measures (CIFAR-10's when it names none)."""
    prefix = metric.split("_")[0]
    return PUBLISHED_DATA.get(prefix, PUBLISHED_DATA["cifar10"])


class PublishedTableEvaluator(Evaluator):
    """Answers every evaluation from a published table: ``accuracy`` from the ``metric`` column (a percentage
    column is scaled to a fraction, as training reports it) and ``latency_ms`` from the device column."""

    runs_inline: ClassVar[bool] = True

    def __init__(self, table: PublishedTable, space: SearchSpace, metric: str, latency_column: str | None) -> None:
        if table.space != space.name:
            raise SpecError(f"{table.path}: a table of {table.space} architectures cannot answer space '{space.name}'")
        accuracy = table.column(metric)
        scale = 100.0 if float(np.nanmax(accuracy)) > 1.0 else 1.0
        self.table = table
        self.metric = metric
        self.accuracy = accuracy / scale
        self.latency = table.column(latency_column) if latency_column is not None else None
        self.target = f"{table.path.name}:{latency_column}" if latency_column is not None else table.path.name
        if table.space == "nb201":  # the whole space is 15,625 cells: refuse a table that lacks one before searching
            cells = (format_nb201(ops) for ops in itertools.product(NB201_OPS, repeat=len(NB201_EDGES)))
            missing = next((c for c in cells if c not in table), None)
            if missing is not None:
                raise SpecError(f"{table.path}: architecture {missing} of space 'nb201' is not in the table "
                                f"({len(table)} rows)")

    @classmethod
    def open(cls, path: str | Path, space: SearchSpace, metric: str, latency_column: str | None
             ) -> PublishedTableEvaluator:
        return cls(load_published_table(path), space, metric, latency_column)

    def evaluate(self, arch: Architecture, budget: Budget, on_epoch: EpochReport | None = None) -> Result:
        try:
            row = self.table.row(_table_key(self.table, arch))
        except SpecError as exc:
            return Result.failed(str(exc))
        values = {"accuracy": float(self.accuracy[row]), "params": float(arch.params()), "macs": float(arch.macs())}
        if self.latency is not None:
            values["latency_ms"] = float(self.latency[row])
        gaps = [k for k, v in values.items() if not math.isfinite(v)]
        if gaps:
            return Result.failed(f"{self.table.path}: row {row} has no value for {', '.join(gaps)}")
        return Result(TrialState.COMPLETE, values, target=self.target)


def _table_key(table: PublishedTable, arch: Architecture) -> str:
    return arch.to_nb201() if table.space == "nb201" else format_fbnet(arch.to_fbnet())
