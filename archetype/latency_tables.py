"""LatencyTable: every operator instance of a space measured alone on a target, stored, and summed to predict.

An operator instance is an operator with its hyperparameters at one input type
(``conv_bn_act(width=16, kernel=3)`` on ``Image[1,8,8]``). Each is built,
measured alone with the target's one protocol, and stored in the SQL store under
the target, a hash of the device's fingerprint and a hash of the instance. The
target's fixed overhead (one run of an identity model) is stored with them.
Each instance measurement includes that overhead once, so an architecture's
predicted latency is ``overhead + sum(max(instance - overhead, 0))``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from archetype.runtime.targets import Target
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.operator import OperatorTypeError, make_operator
from archetype.searchspace.space import Candidate, SearchSpace
from archetype.searchspace.types import TensorType, parse_type
from archetype.store import LatencyRecord, Store
from archetype.worker.evaluator import describe_exception

WRITE_EVERY_S = 2.0
"""Measured entries are written to the store at least this often (and when a build stops, however it stops)."""

OVERHEAD_KEY = "overhead"
"""The table key of the target's fixed cost per run: an identity model measured like any instance."""


@dataclass(frozen=True)
class OperatorInstance:
    """One operator with its hyperparameters at one input type: what a latency table row measures."""

    op: str
    params: tuple[tuple[str, Any], ...]  # sorted by name
    input: TensorType

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "params": dict(self.params), "input": str(self.input)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperatorInstance:
        return cls(str(data["op"]), tuple(sorted(dict(data["params"]).items())), parse_type(data["input"]))

    @property
    def key(self) -> str:
        """A hash of the canonical JSON: equal for equal instances."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def build(self) -> nn.Module:
        """A freshly initialised module of this instance (seeded, so that every build is the same)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return make_operator(self.op, dict(self.params)).build(self.input)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.op}({args}) on {self.input}"


def arch_instances(arch: Architecture) -> list[OperatorInstance]:
    """The operator instances ``arch`` runs, slot by slot."""
    return [OperatorInstance(t.choice.op, t.choice.params, t.input) for t in arch.typing()]


def space_instances(space: SearchSpace) -> list[OperatorInstance]:
    """Every operator instance some well-typed architecture of ``space`` runs.

    Types are propagated slot by slot with the operators' own signatures and the
    slots' categories, forward from the input and then backward from the output
    type, so an instance is kept only if it lies on a path from input to output.
    Skip edges are not checked here, so a few kept instances may be unreachable.
    """
    layers: list[list[tuple[OperatorInstance, TensorType]]] = []
    reaching: set[TensorType] = {space.input}
    for slot in space.slots:
        layer = []
        for x in sorted(reaching, key=str):
            for candidate in slot.candidates:
                for params in _value_combinations(candidate):
                    op = make_operator(candidate.op, params)
                    try:
                        y = op.output_type(x)
                    except OperatorTypeError:
                        continue
                    if slot.categories and op.category(x) not in slot.categories:
                        continue
                    layer.append((OperatorInstance(candidate.op, tuple(sorted(params.items())), x), y))
        layers.append(layer)
        reaching = {y for _, y in layer}
    wanted: set[TensorType] | None = {space.output} if space.output is not None else None
    kept: dict[str, OperatorInstance] = {}
    for layer in reversed(layers):
        alive = [(inst, y) for inst, y in layer if wanted is None or y in wanted]
        kept.update((inst.key, inst) for inst, _ in alive)
        wanted = {inst.input for inst, _ in alive}
    return sorted(kept.values(), key=lambda inst: (inst.op, str(inst.input), inst.params))


def _value_combinations(candidate: Candidate) -> Iterator[dict[str, Any]]:
    names = [name for name, _ in candidate.domain]
    for values in itertools.product(*(values for _, values in candidate.domain)):
        yield {name: value.item() if isinstance(value, np.generic) else value for name, value in zip(names, values)}


def device_key(target: Target) -> str:
    """A hash of the target's fingerprint: the machine, runtime versions and threads a table holds for."""
    text = json.dumps(target.fingerprint(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class BuildReport:
    """What one ``LatencyTable.build`` did: instances measured, found already stored, and failed."""

    instances: int  # in the space (after any cap)
    measured: int = 0
    stored_before: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # instance -> error text
    seconds: float = 0.0
    capped_from: int | None = None  # the space's count of instances when a cap sampled fewer

    def to_json(self) -> dict[str, Any]:
        return {"instances": self.instances, "measured": self.measured, "stored_before": self.stored_before,
                "failed": dict(self.failed), "seconds": self.seconds, "capped_from": self.capped_from}


class LatencyTable:
    """The operator-instance latencies of one target on this device, kept in the store."""

    def __init__(self, store: Store, target: Target) -> None:
        self.store = store
        self.target = target
        self.device = device_key(target)
        self._ms: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"LatencyTable(target={self.target.name!r}, device={self.device[:8]}, entries={len(self._ms)})"

    def load(self, instances: Iterable[OperatorInstance] | None = None) -> None:
        """Read the stored entries (of ``instances`` only, if given) into memory."""
        keys = None if instances is None else [inst.key for inst in instances] + [OVERHEAD_KEY]
        stored = self.store.latency_entries(self.target.name, self.device, keys)
        self._ms.update({key: record.median_ms for key, record in stored.items()})

    def missing(self, instances: Iterable[OperatorInstance]) -> list[OperatorInstance]:
        """The instances that have no stored entry yet."""
        instances = list(instances)
        unknown = [inst for inst in instances if inst.key not in self._ms]
        if unknown:
            self.load(unknown)
        return [inst for inst in instances if inst.key not in self._ms]

    def covers(self, space: SearchSpace) -> bool:
        """Whether every operator instance of ``space`` and the overhead are stored."""
        return not self.missing(space_instances(space)) and self.has_overhead()

    def has_overhead(self) -> bool:
        """Whether the target's fixed overhead is stored (a table was started on this device)."""
        self.load([])
        return OVERHEAD_KEY in self._ms

    def build(
        self,
        space: SearchSpace,
        *,
        max_instances: int | None = None,
        seed: int = 0,
        on_start: Callable[[int], None] | None = None,
        on_instance: Callable[[OperatorInstance], None] | None = None,
    ) -> BuildReport:
        """Measure and store the overhead and every instance of ``space`` not stored yet (so a build resumes).

        With ``max_instances`` a space with more instances gets a seeded uniform
        sample of that many; architectures using the others are predicted once
        ``ensure`` has measured their instances. ``on_start`` receives the
        number of instances to measure, ``on_instance`` is called after each.
        """
        start = time.perf_counter()
        instances = space_instances(space)
        capped_from = None
        if max_instances is not None and len(instances) > max_instances:
            capped_from = len(instances)
            picked = np.random.default_rng(seed).choice(len(instances), size=max_instances, replace=False)
            instances = [instances[i] for i in sorted(picked)]
        todo = self.missing(instances)
        report = BuildReport(len(instances), stored_before=len(instances) - len(todo), capped_from=capped_from)
        if on_start is not None:
            on_start(len(todo))
        self.measure_overhead()
        report.failed = self.ensure(todo, on_instance=on_instance)
        report.measured = len(todo) - len(report.failed)
        report.seconds = time.perf_counter() - start
        return report

    def measure_overhead(self, again: bool = False) -> float:
        """The target's fixed cost per run, measured once on an identity model and stored."""
        if not again:
            self.load([])
        if again or OVERHEAD_KEY not in self._ms:
            latency = self.target.measure(_Passthrough(), parse_type("Vector[1]"))
            item = {"op": "overhead", "params": {}, "input": "Vector[1]"}
            self._put([LatencyRecord(OVERHEAD_KEY, item, latency.median_ms, latency.spread)])
        return self._ms[OVERHEAD_KEY]

    def ensure(
        self,
        instances: Iterable[OperatorInstance],
        on_instance: Callable[[OperatorInstance], None] | None = None,
    ) -> dict[str, str]:
        """Measure and store each of ``instances`` that is not stored; the ones that failed, with their error."""
        failed: dict[str, str] = {}
        measured: list[LatencyRecord] = []
        last_write = time.monotonic()
        try:
            for inst in self.missing(instances):
                try:
                    latency = self.target.measure(inst.build(), inst.input)
                except Exception as exc:  # an operator that does not export or run on this target
                    failed[str(inst)] = describe_exception(exc)
                else:
                    measured.append(LatencyRecord(inst.key, inst.to_json(), latency.median_ms, latency.spread))
                if time.monotonic() - last_write > WRITE_EVERY_S:
                    self._put(measured)
                    measured, last_write = [], time.monotonic()
                if on_instance is not None:
                    on_instance(inst)
        finally:  # an interrupted build keeps what it measured
            self._put(measured)
        return failed

    def predict(self, arch: Architecture) -> float | None:
        """Overhead plus each instance's latency above the overhead; None if an instance is not stored."""
        instances = arch_instances(arch)
        if self.missing(instances) or not (OVERHEAD_KEY in self._ms or self.has_overhead()):
            return None
        overhead = self._ms[OVERHEAD_KEY]
        return overhead + sum(max(self._ms[inst.key] - overhead, 0.0) for inst in instances)

    def _put(self, records: list[LatencyRecord]) -> None:
        if records:
            self.store.put_latency_entries(self.target.name, self.device, records)
            self._ms.update((record.key, record.median_ms) for record in records)


class _Passthrough(nn.Module):
    """The empty model: returns its input plus zero, so that the exported graph has one node."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0

