"""SearchSpace: an ordered chain of typed slots, each with candidate operators and value domains."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace.adapters import insert_adapters, without_adapters
from archetype.searchspace.architecture import INPUT, Architecture, Choice
from archetype.searchspace.operator import CATEGORIES, PRECISION, PRECISIONS, Operator, get_operator
from archetype.searchspace.types import TensorType

MAX_SAMPLE_DRAWS = 200


@dataclass(frozen=True)
class Candidate:
    """One operator a slot may take, with the values searched for each hyperparameter."""

    op: str
    domain: tuple[tuple[str, tuple[Any, ...]], ...]  # (hyperparameter, values); one value = fixed

    @classmethod
    def of(cls, op: str, domain: Mapping[str, Any] | None = None) -> Candidate:
        """Build from a mapping; a scalar value fixes the hyperparameter, and
        unnamed hyperparameters take the operator's default domain if it has one.
        ``precision`` (values among ``fp32``, ``int8``) searches the slot's precision in deployment."""
        op_cls = get_operator(op)
        merged = {k: v for k, v in op_cls.domain.items()}
        for k, v in (domain or {}).items():
            if k == PRECISION:
                _check_precision(op_cls, v)
            elif k not in op_cls.hyperparameters():
                known = list(op_cls.hyperparameters())
                raise SpecError(f"operator '{op}' has no hyperparameter {k!r}; it takes {known}")
            merged[k] = v
        items = []
        for k, v in merged.items():
            values = tuple(v) if isinstance(v, list | tuple) else (v,)
            if not values:
                raise SpecError(f"operator '{op}': hyperparameter {k!r} has an empty domain")
            items.append((k, values))
        return cls(op, tuple(sorted(items)))

    def size(self) -> int:
        return int(np.prod([len(v) for _, v in self.domain])) if self.domain else 1


@dataclass(frozen=True)
class Slot:
    """A named position in the network; ``categories`` restricts the type category it accepts.

    ``skip`` names an earlier slot (or ``input``) whose output is added to this slot's output:
    a skip edge, which type-checks only where both carry the same type.
    """

    name: str
    candidates: tuple[Candidate, ...]
    categories: tuple[str, ...] = ()
    skip: str | None = None

    def __post_init__(self) -> None:
        if not self.candidates:
            raise SpecError(f"slot '{self.name}' has no candidate operators")
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad:
            raise SpecError(f"slot '{self.name}': unknown category {bad[0]!r}; known: {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class SearchSpace:
    """A typed chain of slots from ``input`` to ``output``; makes and checks architectures.

    With ``adapters``, a layout adapter (``searchspace.adapters``) is inserted as an explicit choice in
    front of any slot whose operator cannot take the layout it receives (an image before a token mixer).
    """

    name: str
    input: TensorType
    output: TensorType | None
    slots: tuple[Slot, ...]
    description: str = ""
    adapters: bool = False
    _index: dict[str, Slot] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.slots:
            raise SpecError(f"space '{self.name}' has no slots")
        for slot in self.slots:
            if slot.name in self._index or slot.name == INPUT:
                raise SpecError(f"space '{self.name}': slot name '{slot.name}' appears twice or is reserved")
            if slot.skip is not None and slot.skip != INPUT and slot.skip not in self._index:
                raise SpecError(
                    f"space '{self.name}': slot '{slot.name}' skips from '{slot.skip}', "
                    f"which is not 'input' or an earlier slot"
                )
            self._index[slot.name] = slot

    def slot_categories(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.categories for s in self.slots if s.categories}

    def skip_edges(self) -> tuple[tuple[str, str], ...]:
        """(slot, the earlier slot or ``input`` whose output it adds), sorted."""
        return tuple(sorted((s.name, s.skip) for s in self.slots if s.skip is not None))

    def architecture(self, choices: tuple[Choice, ...]) -> Architecture:
        """The architecture of these choices in this space (not yet type-checked), adapters inserted."""
        if self.adapters:
            choices = insert_adapters(self.input, choices)
        return Architecture(self.input, choices, self, self.skip_edges())

    def size(self) -> int:
        """Number of architectures in the space, ill-typed ones included."""
        return int(np.prod([sum(c.size() for c in s.candidates) for s in self.slots], dtype=object))

    def sample(self, rng: np.random.Generator) -> Architecture:
        """A uniformly drawn well-typed architecture (ill-typed draws are redrawn)."""
        last_error: TypeCheckError | None = None
        for _ in range(MAX_SAMPLE_DRAWS):
            choices = tuple(self._sample_slot(slot, rng) for slot in self.slots)
            arch = self.architecture(choices)
            try:
                arch.typing()
            except TypeCheckError as exc:
                last_error = exc
                continue
            return arch
        raise SpecError(
            f"space '{self.name}' gave no well-typed architecture in {MAX_SAMPLE_DRAWS} draws; last: {last_error}"
        )

    @staticmethod
    def _sample_slot(slot: Slot, rng: np.random.Generator) -> Choice:
        cand = slot.candidates[int(rng.integers(len(slot.candidates)))]
        params = {k: values[int(rng.integers(len(values)))] for k, values in cand.domain}
        return Choice.of(slot.name, cand.op, _plain(params))

    def validate(self, arch: Architecture) -> Architecture:
        """Check slots, operators, values and types; returns the architecture bound to this space."""
        own = without_adapters(arch.choices)
        names = [c.slot for c in own]
        expected = [s.name for s in self.slots]
        if names != expected:
            raise SpecError(f"space '{self.name}' has slots {expected}, architecture has {names}")
        if arch.input != self.input:
            raise TypeCheckError(f"space '{self.name}' takes input {self.input}, architecture has {arch.input}")
        if arch.skip_edges != self.skip_edges():
            raise SpecError(
                f"space '{self.name}' has skip edges {dict(self.skip_edges())}, architecture has {arch.skips()}"
            )
        for choice in own:
            slot = self._index[choice.slot]
            cand = next((c for c in slot.candidates if c.op == choice.op), None)
            if cand is None:
                ops = [c.op for c in slot.candidates]
                raise SpecError(f"slot '{slot.name}': operator '{choice.op}' is not a candidate; candidates: {ops}")
            for name, values in cand.domain:
                value = dict(choice.params).get(name)
                if value not in values:
                    raise SpecError(f"slot '{slot.name}': {choice.op}.{name}={value!r} is outside {list(values)}")
        bound = self.architecture(own)
        if bound.choices != arch.choices:
            given = [c.slot for c in arch.choices if c not in own]
            placed = [c.slot for c in bound.choices if c not in own]
            raise SpecError(f"space '{self.name}' places adapters at {placed}, architecture has them at {given}")
        bound.typing()
        return bound

    def neighbours(self, arch: Architecture) -> Iterator[Architecture]:
        """Every well-typed architecture that differs from ``arch`` in one slot's operator or one value."""
        own = without_adapters(arch.choices)
        for i, (slot, choice) in enumerate(zip(self.slots, own, strict=True)):
            for alt in self._slot_alternatives(slot, choice):
                choices = (*own[:i], alt, *own[i + 1 :])
                candidate = self.architecture(choices)
                try:
                    candidate.typing()
                except TypeCheckError:
                    continue
                yield candidate

    def crossover(
        self, first: Architecture, second: Architecture, rng: np.random.Generator, tries: int = 1
    ) -> Architecture | None:
        """A child taking each slot's choice from either parent with even odds (uniform crossover); None when
        ``tries`` draws are all ill-typed."""
        pairs = list(zip(without_adapters(first.choices), without_adapters(second.choices), strict=True))
        for _ in range(tries):
            child = self.architecture(tuple(a if rng.random() < 0.5 else b for a, b in pairs))
            try:
                child.typing()
            except TypeCheckError:
                continue
            return child
        return None

    @staticmethod
    def _slot_alternatives(slot: Slot, choice: Choice) -> Iterator[Choice]:
        current = dict(choice.params)
        for cand in slot.candidates:
            if cand.op != choice.op:
                # a new operator keeps the values it shares with the old one where they are allowed
                params = {k: current[k] if current.get(k) in v else v[0] for k, v in cand.domain}
                yield Choice.of(slot.name, cand.op, _plain(params))
                continue
            for name, values in cand.domain:
                for value in values:
                    if value != current.get(name):
                        yield Choice.of(slot.name, cand.op, {**current, name: _plain_value(value)})

    def encode(self, arch: Architecture) -> list[float]:
        """One-hot operator per slot, then each hyperparameter's index scaled to [0, 1]."""
        vec: list[float] = []
        for slot, choice in zip(self.slots, without_adapters(arch.choices), strict=True):
            params = dict(choice.params)
            for cand in slot.candidates:
                chosen = cand.op == choice.op
                vec.append(1.0 if chosen else 0.0)
                for name, values in cand.domain:
                    if len(values) > 1:
                        idx = values.index(params[name]) if chosen and params.get(name) in values else 0
                        vec.append(idx / (len(values) - 1) if chosen else 0.0)
        return vec

    def architecture_from_json(self, data: Mapping[str, Any]) -> Architecture:
        return self.validate(Architecture.from_json(data, self))

    def with_precision(self, precisions: tuple[str, ...] = PRECISIONS) -> SearchSpace:
        """This space with a per-slot precision searched jointly with the architecture (SimQ-NAS): every
        candidate with weights gets ``precision`` in ``precisions``; ``int8`` slots run quantized in deployment."""
        if not precisions or any(p not in PRECISIONS for p in precisions):
            raise SpecError(f"space '{self.name}': precision must be among {list(PRECISIONS)}, got {precisions!r}")
        slots = tuple(
            dataclasses.replace(slot, candidates=tuple(
                Candidate(c.op, tuple(sorted((*c.domain, (PRECISION, tuple(precisions))))))
                if get_operator(c.op).weighted and PRECISION not in dict(c.domain) else c
                for c in slot.candidates
            ))
            for slot in self.slots
        )
        return dataclasses.replace(self, slots=slots, _index={})


MAX_DEPTH = 256
"""The most copies a repeated block may have."""


def repeated(
    name: str,
    candidates: tuple[Candidate, ...],
    depth: int | tuple[int, int],
    categories: tuple[str, ...] = (),
) -> tuple[Slot, ...]:
    """Slots ``name.1`` ... ``name.<max>`` of one repeated block; past ``min`` each may also be
    ``identity``, so the block's depth is searched between ``min`` and ``max`` (elastic depth)."""
    low, high = (depth, depth) if isinstance(depth, int) else depth
    if isinstance(low, bool) or isinstance(high, bool) or not 0 <= low <= high or high < 1:
        raise SpecError(f"slot '{name}': depth must be n >= 1 or [min, max] with 0 <= min <= max, got {depth!r}")
    if high > MAX_DEPTH:
        raise SpecError(f"slot '{name}': depth must be at most {MAX_DEPTH}, got {depth!r}")
    if high > low and categories and "shape-preserving" not in categories:
        raise SpecError(f"slot '{name}': an elastic depth needs shape-preserving blocks, but the slot is {categories}")
    optional = tuple(c for c in candidates if c.op != "identity")
    identity = (Candidate.of("identity"),)
    return tuple(
        Slot(f"{name}.{i}", candidates if i <= low else identity + optional, categories) for i in range(1, high + 1)
    )


def _check_precision(op_cls: type[Operator], values: Any) -> None:
    """SpecError unless ``values`` are precisions an operator of ``op_cls`` can take."""
    listed = list(values) if isinstance(values, list | tuple) else [values]
    bad = [v for v in listed if v not in PRECISIONS]
    if bad or not listed:
        raise SpecError(f"operator '{op_cls.name}': precision must be among {list(PRECISIONS)}, got {values!r}")
    if not op_cls.weighted and listed != ["fp32"]:
        raise SpecError(f"operator '{op_cls.name}' has no weights, so its precision cannot be searched")


def _plain_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain_value(v) for k, v in params.items()}
