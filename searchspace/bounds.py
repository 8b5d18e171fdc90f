"""Ceilings on what a space may build, checked with the operators' own formulas before anything is built.

``ArchitectureLimits.check_space`` refuses a space in which one slot's choice alone is over a ceiling
(a width of 10^8 channels), naming the slot and the value; ``check_architecture`` refuses one
architecture whose slots together are over it. Both cost only the formulas, never a module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

from archetype.errors import SpecError
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.operator import PRECISION, Operator, OperatorTypeError, make_operator
from archetype.searchspace.space import Candidate, SearchSpace
from archetype.searchspace.types import TensorType
from archetype.validation import checked, count, number

BYTES_PER_VALUE = 4  # fp32 activations
MAX_TYPES_PER_SLOT = 8
"""The input types followed into each slot (the largest ones) when a space is checked."""
MAX_COMBINATIONS = 256
"""The hyperparameter combinations of one candidate tried together (besides every single value once)."""


@checked(frozen=True)
class ArchitectureLimits:
    """The most one architecture may have: parameters, and activation memory per sample (every slot's output)."""

    max_params: int = count(100_000_000)
    max_activation_mb: float = number(1024.0)

    def check_architecture(self, arch: Architecture) -> None:
        """SpecError naming the slot at which ``arch``'s parameters or activation memory pass a ceiling."""
        params, activation = 0, 0.0
        for typing in arch.typing():
            params += typing.params
            activation += activation_mb(typing.output)
            if params > self.max_params:
                raise SpecError(f"slot '{typing.slot}' ({_describe(typing.choice.op, dict(typing.choice.params))}): "
                                f"the architecture reaches {params:.3g} parameters, over max_params "
                                f"{self.max_params:.3g}")
            if activation > self.max_activation_mb:
                raise SpecError(f"slot '{typing.slot}' ({_describe(typing.choice.op, dict(typing.choice.params))}): "
                                f"the architecture reaches {activation:.3g} MB of activations per sample, over "
                                f"max_activation_mb {self.max_activation_mb:g}")

    def check_space(self, space: SearchSpace) -> None:
        """SpecError naming the slot and value of any single choice over a ceiling at an input it can receive."""
        types = {space.input}
        seen: dict[tuple[str, TensorType], set[TensorType]] = {}  # repeated blocks share their candidates
        for slot in space.slots:
            produced: set[TensorType] = set()
            for candidate in slot.candidates:
                for x in types:
                    key = (repr(candidate), x)
                    if key not in seen:
                        seen[key] = self._candidate_outputs(space, slot.name, candidate, x)
                    produced |= seen[key]
            if produced:
                types = set(sorted(produced, key=_size, reverse=True)[:MAX_TYPES_PER_SLOT])

    def _candidate_outputs(self, space: SearchSpace, slot: str, candidate: Candidate, x: TensorType) -> set[TensorType]:
        outputs: set[TensorType] = set()
        for hparams in _combinations(candidate):
            try:
                op = make_operator(candidate.op, hparams)
                y = op.output_type(x)
            except (SpecError, OperatorTypeError, TypeError, ValueError, ZeroDivisionError, OverflowError):
                continue
            self._check_choice(space, slot, op, hparams, x, y)
            outputs.add(y)
        return outputs

    def _check_choice(
        self, space: SearchSpace, slot: str, op: Operator, hparams: dict[str, Any], x: TensorType, y: TensorType
    ) -> None:
        where = f"space '{space.name}': slot '{slot}' ({_describe(op.name, hparams)}) on {x}"
        try:
            params = op.params(x)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, OperatorTypeError):
            return
        if params > self.max_params:
            raise SpecError(f"{where} alone has {params:.3g} parameters, over max_params {self.max_params:.3g}")
        activation = activation_mb(y)
        if activation > self.max_activation_mb:
            raise SpecError(f"{where} alone outputs {activation:.3g} MB per sample, over max_activation_mb "
                            f"{self.max_activation_mb:g}")


def activation_mb(t: TensorType) -> float:
    """MB of one sample of ``t`` in fp32."""
    return _size(t) * BYTES_PER_VALUE / 1e6


def _size(t: TensorType) -> int:
    return math.prod(t.dims())


def _combinations(candidate: Candidate) -> Iterator[dict[str, Any]]:
    """Every single value of each hyperparameter (the others at their first value), then the first combinations."""
    domain = [(k, v) for k, v in candidate.domain if k != PRECISION]
    first = {k: values[0] for k, values in domain}
    yield first
    for name, values in domain:
        for value in values[1:]:
            yield {**first, name: value}
    names = [k for k, _ in domain]
    for values in itertools.islice(itertools.product(*(v for _, v in domain)), MAX_COMBINATIONS):
        yield dict(zip(names, values))


def _describe(op: str, hparams: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(hparams.items()) if k != PRECISION)
    return f"{op} {shown}" if shown else op
