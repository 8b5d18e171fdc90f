"""NeuralArTS relations between operators, answered by probing their type functions.

Two operator instances are *type-equivalent* when they map every probe input to the
same output type (so either may replace the other in any slot), *instance-equivalent*
at one input when they agree there, and A is *forward-compatible* with B at an input
when B accepts what A produces. Categories ("any shape-preserving Image operator")
are found the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from archetype.searchspace.operator import Operator, OperatorTypeError, categorize, list_operators
from archetype.searchspace.types import Image, TensorType, Tokens, Vector

PROBES: dict[type[TensorType], tuple[TensorType, ...]] = {
    Image: (Image(16, 8, 8), Image(24, 16, 16), Image(32, 12, 12)),
    Tokens: (Tokens(16, 32), Tokens(64, 48), Tokens(36, 64)),
    Vector: (Vector(32), Vector(64)),
}
MAX_INSTANCES = 64


def output_or_none(op: Operator, x: TensorType) -> TensorType | None:
    """``op``'s output type at ``x``, or None where it refuses ``x``."""
    try:
        return op.output_type(x)
    except OperatorTypeError:
        return None


def probes_for(op: Operator) -> tuple[TensorType, ...]:
    return tuple(p for layout in op.accepts for p in PROBES.get(layout, ()))


def type_equivalent(a: Operator, b: Operator) -> bool:
    """Same type function: equal outputs (or the same refusals) on every probe either accepts."""
    if set(a.accepts) != set(b.accepts):
        return False
    return all(output_or_none(a, x) == output_or_none(b, x) for x in probes_for(a))


def instance_equivalent(a: Operator, b: Operator, x: TensorType) -> bool:
    """Both accept ``x`` and produce the same type from it."""
    y = output_or_none(a, x)
    return y is not None and y == output_or_none(b, x)


def forward_compatible(a: Operator, b: Operator, x: TensorType) -> bool:
    """``b`` accepts what ``a`` produces from ``x``."""
    y = output_or_none(a, x)
    return y is not None and output_or_none(b, y) is not None


def instances(op_cls: type[Operator], limit: int = MAX_INSTANCES) -> Iterator[Operator]:
    """Instances over the operator's default domain (fields without one keep their defaults)."""
    names = list(op_cls.domain)
    for values in itertools.islice(itertools.product(*(op_cls.domain[n] for n in names)), limit):
        try:
            yield op_cls(**dict(zip(names, values, strict=True)))
        except TypeError:  # a required field has no domain (e.g. a head's number of classes)
            return


def operators_in_category(category: str, layout: type[TensorType] = Image) -> list[type[Operator]]:
    """Registered operators taking ``layout`` with an instance in ``category`` on every probe."""
    found = []
    for op_cls in list_operators():
        if layout not in op_cls.accepts:
            continue
        for op in instances(op_cls):
            outputs = [(x, output_or_none(op, x)) for x in PROBES[layout]]
            if all(y is not None and categorize(x, y) == category for x, y in outputs):
                found.append(op_cls)
                break
    return found
