"""Hyperparameter checks shared by the operators; each raises SpecError naming the operator and the hyperparameter.

An operator's ``__post_init__`` calls them after the base class has checked the hyperparameter types.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from archetype.errors import SpecError
from archetype.searchspace.operator import Operator


def require(op: Operator, field: str, ok: bool, rule: str) -> None:
    """SpecError saying that hyperparameter ``field`` of ``op`` must be ``rule`` unless ``ok``."""
    if not ok:
        raise SpecError(f"operator '{op.name}': hyperparameter '{field}' must be {rule}, got {getattr(op, field)!r}")


def check_at_least(op: Operator, minimum: float, *fields: str) -> None:
    """SpecError unless each hyperparameter in ``fields`` is >= ``minimum``."""
    for field in fields:
        require(op, field, getattr(op, field) >= minimum, f">= {minimum}")


def check_positive(op: Operator, *fields: str) -> None:
    """SpecError unless each hyperparameter in ``fields`` is >= 1 (a width, a count, a ratio, a stride)."""
    check_at_least(op, 1, *fields)


def check_odd(op: Operator, *fields: str) -> None:
    """SpecError unless each hyperparameter in ``fields`` is odd and >= 1 (a kernel with a centre tap)."""
    for field in fields:
        value = getattr(op, field)
        require(op, field, value >= 1 and value % 2 == 1, "odd and >= 1 (an odd kernel is centred on its pixel)")


def check_probability(op: Operator, *fields: str) -> None:
    """SpecError unless each hyperparameter in ``fields`` is in [0, 1) (a drop path or dropout rate)."""
    for field in fields:
        require(op, field, 0.0 <= getattr(op, field) < 1.0, "in [0, 1)")


def check_multiple_of(op: Operator, field: str, factor: int, why: str = "") -> None:
    """SpecError unless hyperparameter ``field`` is a multiple of ``factor``; ``why`` says what needs it."""
    require(op, field, getattr(op, field) % factor == 0, f"a multiple of {factor}" + (f" ({why})" if why else ""))


def check_choice(op: Operator, field: str, choices: Collection[Any]) -> None:
    """SpecError unless hyperparameter ``field`` is one of ``choices`` (an activation name, a pooling kind)."""
    require(op, field, getattr(op, field) in choices, f"one of {sorted(choices)}")
