"""ArchitectureNetwork: the ``torch.nn.Module`` an architecture builds to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from archetype.errors import SpecError
from archetype.result import megabytes
from archetype.searchspace.architecture import INPUT

if TYPE_CHECKING:
    from archetype.searchspace.architecture import Architecture


class ArchitectureNetwork(nn.Module):
    """The slots' modules applied in order; module names follow the slot names."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        typings = arch.typing()  # refuses an ill-typed architecture before building
        self.input_type = arch.input
        self.output_type = typings[-1].output
        names = [module_name(t.slot) for t in typings]
        taken = nn.ModuleDict()
        for t, name in zip(typings, names, strict=True):
            if not name or names.count(name) > 1 or hasattr(taken, name):
                raise SpecError(f"slot '{t.slot}': module name '{name}' is empty, repeated or a torch attribute")
        self.slots = nn.ModuleDict({name: t.choice.operator().build(t.input) for t, name in zip(typings, names)})
        self.skips = {module_name(slot): module_name(source) for slot, source in arch.skips().items()}
        self._kept = set(self.skips.values())  # outputs a later skip edge reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = {INPUT: x} if INPUT in self._kept else {}
        for name, module in self.slots.items():
            x = module(x)
            if name in self.skips:
                x = x + kept[self.skips[name]]
            if name in self._kept:
                kept[name] = x
        return x


def module_name(slot: str) -> str:
    """The name of a slot's module in the network (dots are not allowed in module names)."""
    return slot.replace(".", "_")


def model_size_mb(model: nn.Module) -> float:
    """The bytes of all parameters and buffers of ``model``, in MB (``archetype.result.megabytes``)."""
    return megabytes(sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]))
