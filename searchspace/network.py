"""ArchitectureNetwork: the ``torch.nn.Module`` an architecture builds to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from archetype.searchspace.architecture import Architecture


class ArchitectureNetwork(nn.Module):
    """The slots' modules applied in order; module names follow the slot names."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        typings = arch.typing()  # refuses an ill-typed architecture before building
        self.input_type = arch.input
        self.output_type = typings[-1].output
        self.slots = nn.ModuleDict(
            {_module_name(t.slot): t.choice.operator().build(t.input) for t in typings}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.slots.values():
            x = module(x)
        return x


def _module_name(slot: str) -> str:
    return slot.replace(".", "_")
