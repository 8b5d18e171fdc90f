"""The type checker: refuses an ill-typed architecture before anything is built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from archetype.errors import SpecError, TypeCheckError
from archetype.searchspace.architecture import INPUT, Choice
from archetype.searchspace.operator import OperatorTypeError
from archetype.searchspace.types import TensorType


@dataclass(frozen=True)
class SlotTyping:
    """What one slot receives and produces, and what its operator costs there."""

    slot: str
    choice: Choice
    input: TensorType
    output: TensorType
    category: str
    params: int
    macs: int


def infer_types(
    input_type: TensorType,
    choices: Sequence[Choice],
    output: TensorType | None = None,
    categories: dict[str, tuple[str, ...]] | None = None,
    skips: dict[str, str] | None = None,
) -> list[SlotTyping]:
    """Propagate types through ``choices`` in order; the error names the slot and both types.

    ``categories`` maps a slot to the type categories it allows; ``output`` is the
    type the last slot must produce; ``skips`` maps a slot to the earlier slot (or
    ``input``) whose output is added to its own, which must then be of the same type.
    """
    typings: list[SlotTyping] = []
    x = input_type
    produced = {INPUT: input_type}
    for choice in choices:
        try:
            op = choice.operator()
        except SpecError as exc:
            raise SpecError(f"slot '{choice.slot}': {exc}") from None
        try:
            y = op.output_type(x)
        except OperatorTypeError as exc:
            raise TypeCheckError(f"slot '{choice.slot}' receives {x}: {exc}") from None
        category = op.category(x)
        allowed = (categories or {}).get(choice.slot)
        if allowed and category not in allowed:
            raise TypeCheckError(
                f"slot '{choice.slot}' must be {' or '.join(allowed)}, but operator '{choice.op}' "
                f"maps {x} to {y} ({category})"
            )
        source = (skips or {}).get(choice.slot)
        if source is not None and produced.get(source) != y:
            carried = produced.get(source, "nothing (not an earlier slot)")
            raise TypeCheckError(
                f"slot '{choice.slot}' adds the skip edge from '{source}', which carries {carried}, "
                f"but operator '{choice.op}' produces {y}"
            )
        typings.append(SlotTyping(choice.slot, choice, x, y, category, op.params(x), op.macs(x)))
        produced[choice.slot] = x = y
    if output is not None and x != output:
        last = choices[-1].slot if choices else "input"
        raise TypeCheckError(f"slot '{last}' produces {x}, but the space's output type is {output}")
    return typings
