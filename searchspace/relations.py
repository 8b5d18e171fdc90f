"""NeuralArTS relations between operators, answered by probing their type functions.

Two operator instances are *type-equivalent* when they map every probe input to the
same output type (so either may replace the other in any slot), *instance-equivalent*
at one input when they agree there, and A is *forward-compatible* with B at an input
when B accepts what A produces. Categories ("any shape-preserving Image operator")
are found the same way.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

from archetype.searchspace.operator import Operator, OperatorTypeError, categorize, list_operators
from archetype.searchspace.types import Image, TensorType, Tokens, Vector, Volume

PROBES: dict[type[TensorType], tuple[TensorType, ...]] = {
    Image: (Image(16, 8, 12), Image(24, 16, 8), Image(32, 12, 12)),
    Tokens: (Tokens(16, 32), Tokens(64, 48), Tokens(36, 64)),
    Vector: (Vector(32), Vector(64)),
    Volume: (Volume(8, 4, 10, 12), Volume(16, 6, 14, 18), Volume(12, 8, 20, 16)),
}
MAX_INSTANCES = 64
_PROBE_CLASSES = {"classes": 10}  # heads need a number of classes to be probed


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
    fixed = _PROBE_CLASSES if "classes" in op_cls.hyperparameters() and "classes" not in names else {}
    for values in itertools.islice(itertools.product(*(op_cls.domain[n] for n in names)), limit):
        try:
            yield op_cls(**dict(zip(names, values, strict=True)), **fixed)
        except TypeError:  # a required field has no domain
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


def signature(op_cls: type[Operator]) -> str:
    """A readable type signature such as ``Image[C,H,W] -> Image[width,H/stride,W/stride]``.

    Found by probing one instance (the last value of each domain) on several inputs
    and naming each output dimension by the simplest expression that fits them all.
    """
    op = _probe_instance(op_cls)
    if op is None:
        return "(needs values for " + ", ".join(op_cls.hyperparameters()) + ")"
    parts = []
    for layout in op.accepts:
        pairs = [(x, y) for x in PROBES.get(layout, ()) if (y := output_or_none(op, x)) is not None]
        if not pairs:
            continue
        in_names = [f.name for f in dataclasses.fields(layout)]
        out_type = type(pairs[0][1])
        dims = [_name_dim(j, pairs, in_names, op) for j in range(len(pairs[0][1].dims()))]
        parts.append(f"{layout.layout}[{','.join(in_names)}] -> {out_type.layout}[{','.join(dims)}]")
    return "; ".join(parts)


def _probe_instance(op_cls: type[Operator]) -> Operator | None:
    for pick in (-1, 0):
        values = {name: domain[pick] for name, domain in op_cls.domain.items()}
        if "classes" in op_cls.hyperparameters() and "classes" not in values:
            values.update(_PROBE_CLASSES)
        try:
            return op_cls(**values)
        except Exception:  # an instance the operator refuses; try the other end of the domain
            continue
    return None


def _name_dim(j: int, pairs: list, in_names: list[str], op: Operator) -> str:
    outs = [y.dims()[j] for _, y in pairs]
    ins = [x.dims() for x, _ in pairs]
    hps = {k: v for k, v in op.hparams().items() if isinstance(v, int) and not isinstance(v, bool) and v > 1}
    candidates: list[tuple[str, list[int]]] = []
    own_first = sorted(range(len(in_names)), key=lambda i: i != j)  # an output dim is most likely its own input dim
    for i in own_first:
        name = in_names[i]
        col = [d[i] for d in ins]
        candidates.append((name, col))
        for hp, v in hps.items():
            candidates.append((f"{name}/{hp}", [-(-c // v) for c in col]))
            candidates.append((f"{name}+{hp}", [c + v for c in col]))
            candidates.append((f"{name}/{hp}²", [c // (v * v) for c in col]))
        candidates += [(f"{name}/{k}", [-(-c // k) for c in col]) for k in (2, 4)]
    if len(in_names) == 3:  # Image -> Tokens: H*W, or patches of side p
        hw = [d[1] * d[2] for d in ins]
        candidates.append(("H*W", hw))
        candidates += [(f"H*W/{hp}²", [c // (v * v) for c in hw]) for hp, v in hps.items()]
    if len(in_names) == 4:  # Volume -> Image: depth folded into channels
        candidates.append(("C*D", [d[0] * d[1] for d in ins]))
    if len(in_names) == 2:  # Tokens -> Image of a square grid
        candidates.append(("√N", [round(d[0] ** 0.5) for d in ins]))
    for name, values in candidates:
        if values == outs:
            return name
    if len(set(outs)) == 1:
        return next((hp for hp, v in op.hparams().items() if v == outs[0] and not isinstance(v, bool)), str(outs[0]))
    return "?"
