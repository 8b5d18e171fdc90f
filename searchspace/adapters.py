"""Layout adapters that a space may insert between slots, so that, say, a token mixer can follow a conv stage.

An inserted adapter is an explicit choice of the architecture, in a slot named ``adapter>SLOT`` (a name no
space slot can take), so it shows in the JSON, the key, the graph and the built network.
"""

from __future__ import annotations

from collections.abc import Sequence

from archetype.errors import SpecError
from archetype.searchspace.architecture import Choice
from archetype.searchspace.operator import OperatorTypeError
from archetype.searchspace.types import TensorType

ADAPTER_PREFIX = "adapter>"
ADAPTERS: dict[tuple[str, str], str] = {
    ("Image", "Tokens"): "image_to_tokens",
    ("Tokens", "Image"): "unpatchify",
    ("Volume", "Image"): "fold_depth",
}
"""(from layout, to layout) -> the parameter-free operator that converts between them."""


def adapter_slot(slot: str) -> str:
    """The name of the adapter slot inserted in front of ``slot``."""
    return f"{ADAPTER_PREFIX}{slot}"


def is_adapter(choice: Choice) -> bool:
    return choice.slot.startswith(ADAPTER_PREFIX)


def without_adapters(choices: Sequence[Choice]) -> tuple[Choice, ...]:
    """The choices of the space's own slots."""
    return tuple(choice for choice in choices if not is_adapter(choice))


def insert_adapters(input_type: TensorType, choices: Sequence[Choice]) -> tuple[Choice, ...]:
    """``choices`` with an adapter in front of each slot whose operator cannot take the incoming layout.

    Where no adapter fits, or types fail for another reason, the rest is left as it is and the type
    checker reports the problem.
    """
    own = without_adapters(choices)
    adapted: list[Choice] = []
    x = input_type
    for choice in own:
        try:
            op = choice.operator()
            if not isinstance(x, op.accepts):
                adapter = _adapter_for(x, op.accepts, choice.slot)
                if adapter is not None:
                    x = adapter.operator().output_type(x)
                    adapted.append(adapter)
            adapted.append(choice)
            x = op.output_type(x)
        except (SpecError, OperatorTypeError):
            return (*adapted, *own[len(without_adapters(adapted)) :])
    return tuple(adapted)


def _adapter_for(x: TensorType, accepts: tuple[type[TensorType], ...], slot: str) -> Choice | None:
    for wanted in accepts:
        name = ADAPTERS.get((x.layout, wanted.layout))
        if name is not None:
            return Choice.of(adapter_slot(slot), name, {})
    return None
