"""Objectives and constraints, declared once in a run spec and honoured by every strategy."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from archetype.errors import SpecError


class Direction(enum.StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class Objective:
    """A measured value to maximize or minimize, e.g. ``accuracy`` or ``latency_ms``."""

    name: str
    direction: Direction

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction is Direction.MAXIMIZE else a < b

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "direction": self.direction.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Objective:
        return cls(data["name"], Direction(data["direction"]))


_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """A bound on a measured value: ``latency_ms <= 2.0`` or ``accuracy >= 0.9``."""

    name: str
    op: str  # "<=" or ">="
    bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.bound, int | float) or isinstance(self.bound, bool) or not math.isfinite(self.bound):
            raise SpecError(f"constraint on {self.name!r}: the bound must be a finite number, got {self.bound!r}")
        if self.op not in ("<=", ">="):
            raise SpecError(f"constraint on {self.name!r}: operator must be '<=' or '>=', got {self.op!r}")

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse ``"latency_ms<=2"``."""
        match = _CONSTRAINT_RE.match(text)
        if not match:
            raise SpecError(f"constraint {text!r} is not of the form 'name<=number' or 'name>=number'")
        name, op, bound = match.groups()
        return cls(name, op, float(bound))

    def violation(self, values: Mapping[str, float]) -> float | None:
        """How far ``values`` is outside the bound (0 if inside); None if the value is missing or not finite."""
        value = values.get(self.name)
        if value is None or not math.isfinite(value):
            return None
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return max(0.0, gap)

    def satisfied(self, values: Mapping[str, float]) -> bool:
        """The value is measured, finite and within the bound; a missing value is not."""
        return self.violation(values) == 0.0

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "bound": self.bound}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Constraint:
        return cls(data["name"], data["op"], float(data["bound"]))


def within_budget(values: Mapping[str, float], constraints: Iterable[Constraint]) -> bool:
    """The one definition of feasible values: every constraint met; a missing or non-finite value is infeasible."""
    return all(c.satisfied(values) for c in constraints)


DEFAULT_OBJECTIVES = (Objective("accuracy", Direction.MAXIMIZE), Objective("latency_ms", Direction.MINIMIZE))
