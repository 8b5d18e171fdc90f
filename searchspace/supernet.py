"""Supernet: the weights of every choice of every slot of a space, held once, so one training run scores many.

Every (slot, operator choice, input type) an architecture of the space can reach is served by one
shared module: an elastic one for the conv-family operators (width, kernel and input width sliced
from the largest weight, see ``elastic``), else one module per distinct hyperparameters and input
type, shared by every architecture that chooses it. Elastic depth comes from the space's repeated
slots, whose ``identity`` choice skips a block.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from archetype.errors import SpecError
from archetype.searchspace.architecture import INPUT, Architecture, Choice
from archetype.searchspace.elastic import ElasticOp, Use, make_shared, sharing_key
from archetype.searchspace.network import ArchitectureNetwork, module_name
from archetype.searchspace.operator import Operator, OperatorTypeError, make_operator
from archetype.searchspace.space import SearchSpace, Slot
from archetype.searchspace.types import TensorType


class Supernet(nn.Module):
    """All choices of ``space`` with shared weights; ``activate(arch)`` picks the path ``forward`` runs."""

    def __init__(self, space: SearchSpace, lazy: bool = False) -> None:
        """Hold every choice's module; with ``lazy`` a module is built when a path first needs it
        (to inspect or extract paths; an optimizer needs the modules built, so train an eager one)."""
        super().__init__()
        from archetype.searchspace.cell import CellSpace

        if isinstance(space, CellSpace):
            raise SpecError(f"space '{space.name}' is a cell space: weight-sharing supernets hold chain spaces only; "
                            "search it with a multi-trial strategy")
        self.space = space
        self.slots = nn.ModuleDict()
        self._names: dict[str, dict[tuple[Any, ...], str]] = {}  # slot -> sharing key -> module name
        self._uses: dict[str, dict[tuple[Any, ...], list[Use]]] = {}  # slot -> sharing key -> choices served
        reachable: dict[str, set[TensorType]] = {INPUT: {space.input}}
        current = {space.input}
        for slot in space.slots:
            uses, outputs = _slot_uses(slot, current, space, reachable)
            if not uses:
                raise SpecError(f"space '{space.name}': slot '{slot.name}' has no well-typed choice")
            self._uses[slot.name] = uses
            self._names[slot.name] = {key: f"{key[0]}{i}" for i, key in enumerate(uses)}
            self.slots[module_name(slot.name)] = nn.ModuleDict()
            reachable[slot.name] = current = outputs
        if not lazy:
            self.materialize()
        self._path: list[tuple[str, ElasticOp, Operator]] = []
        self._skips = {module_name(s): module_name(t) for s, t in space.skip_edges()}
        self._kept = set(self._skips.values())
        self.active: Architecture | None = None

    def materialize(self) -> None:
        """Build every module not built yet (a lazy supernet before training or loading a state)."""
        for slot, uses in self._uses.items():
            for key in uses:
                self._shared(slot, key)

    def _shared(self, slot: str, key: tuple[Any, ...]) -> ElasticOp:
        name = self._names[slot].get(key)
        if name is None:
            raise SpecError(f"slot '{slot}': the supernet holds no module for {key[0]} with {key[2:]}")
        modules = self.slots[module_name(slot)]
        if name not in modules:
            modules[name] = make_shared(key, self._uses[slot][key])
        return modules[name]

    def activate(self, arch: Architecture) -> Architecture:
        """Route ``forward`` through ``arch``'s choices; returns the architecture bound to the space."""
        arch = self.space.validate(arch)
        path = []
        for t in arch.typing():
            op = t.choice.operator()
            path.append((module_name(t.slot), self._shared(t.slot, sharing_key(op, t.input)), op))
        self._path, self.active = path, arch
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise RuntimeError("Supernet.forward before activate(architecture)")
        kept = {INPUT: x} if INPUT in self._kept else {}
        for name, module, op in self._path:
            x = module(x, op)
            if name in self._skips:
                x = x + kept[self._skips[name]]
            if name in self._kept:
                kept[name] = x
        return x

    def extract(self, arch: Architecture | None = None) -> ArchitectureNetwork:
        """A standalone network of ``arch`` (default: the active one) holding copies of the inherited weights."""
        arch = self.space.validate(arch) if arch is not None else self.active
        if arch is None:
            raise RuntimeError("Supernet.extract needs an architecture or an active one")
        with torch.random.fork_rng(devices=[]):
            network = ArchitectureNetwork(arch)
        for t in arch.typing():
            op = t.choice.operator()
            network.slots[module_name(t.slot)] = self._shared(t.slot, sharing_key(op, t.input)).export(op, t.input)
        return network.train(self.training)

    def active_modules(self) -> list[nn.Module]:
        """The shared modules the active path runs through."""
        return [module for _, module, _ in self._path]

    def shared_modules(self) -> int:
        """How many shared modules the supernet holds (once built), over all slots."""
        return sum(len(uses) for uses in self._uses.values())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _slot_uses(
    slot: Slot, inputs: set[TensorType], space: SearchSpace, reachable: dict[str, set[TensorType]]
) -> tuple[dict[tuple[Any, ...], list[Use]], set[TensorType]]:
    """Every choice of ``slot`` that type-checks at some reachable input, grouped by sharing key; and the outputs."""
    uses: dict[tuple[Any, ...], list[Use]] = {}
    outputs: set[TensorType] = set()
    allowed = set(slot.categories)
    for _, op in _slot_operators(slot):
        for x in sorted(inputs, key=str):
            try:
                y = op.output_type(x)
                category = op.category(x)
            except (OperatorTypeError, SpecError):
                continue
            if (allowed and category not in allowed) or (slot.skip is not None and y not in reachable[slot.skip]):
                continue
            uses.setdefault(sharing_key(op, x), []).append((op, x))
            outputs.add(y)
    return uses, outputs


def _slot_operators(slot: Slot) -> Iterator[tuple[Choice, Operator]]:
    """Every choice a slot offers, with its operator; hyperparameter sets the operator refuses are left out."""
    for cand in slot.candidates:
        names = [name for name, _ in cand.domain]
        for values in itertools.product(*(v for _, v in cand.domain)):
            params = {k: v.item() if isinstance(v, np.generic) else v for k, v in zip(names, values)}
            try:
                yield Choice.of(slot.name, cand.op, params), make_operator(cand.op, params)
            except SpecError:
                continue


def extreme_architecture(
    space: SearchSpace, largest: bool, rng: np.random.Generator, draws: int = 64
) -> Architecture:
    """The architecture with the most (or fewest) parameters: greedy by slot, else the best of ``draws`` samples."""
    pick = max if largest else min
    x, choices = space.input, []
    for slot in space.slots:
        options = []
        for choice, op in _slot_operators(slot):
            try:
                options.append((op.params(x), choice, op.output_type(x)))
            except (OperatorTypeError, SpecError):
                continue
        if not options:
            break
        _, choice, x = pick(options, key=lambda o: o[0])
        choices.append(choice)
    if len(choices) == len(space.slots):
        try:
            return space.validate(space.architecture(tuple(choices)))
        except SpecError:
            pass  # a category or skip edge refused the greedy pick
    return pick((space.sample(rng) for _ in range(draws)), key=lambda a: a.params())
