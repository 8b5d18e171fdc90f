"""Architecture: one choice of operator and hyperparameters per slot of a space."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archetype.errors import SpecError
from archetype.searchspace.operator import PRECISION, Operator, make_operator
from archetype.searchspace.types import Image, TensorType, parse_type

NB201_INPUT = Image(3, 32, 32)
"""The CIFAR input the NB201 and FBNet spaces are measured on."""

INPUT = "input"
"""The name a skip edge uses for the network's input."""

if TYPE_CHECKING:
    import networkx as nx
    from torch import nn

    from archetype.searchspace.cell import CellSpace
    from archetype.searchspace.space import SearchSpace
    from archetype.searchspace.typecheck import SlotTyping


@dataclass(frozen=True)
class Choice:
    """The operator and hyperparameters picked for one slot."""

    slot: str
    op: str
    params: tuple[tuple[str, Any], ...]  # sorted by name, so equal choices compare equal

    @classmethod
    def of(cls, slot: str, op: str, params: Mapping[str, Any]) -> Choice:
        return cls(slot, op, tuple(sorted(params.items())))

    def operator(self) -> Operator:
        return make_operator(self.op, dict(self.params))

    @property
    def precision(self) -> str:
        """``fp32`` unless the space searched this slot's precision and chose ``int8``."""
        return str(dict(self.params).get(PRECISION, "fp32"))

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "op": self.op, "params": dict(self.params)}


@dataclass(frozen=True)
class Architecture:
    """A frozen, JSON-able network description; ``key`` identifies the network."""

    input: TensorType
    choices: tuple[Choice, ...]
    space: SearchSpace | None = field(default=None, compare=False, repr=False)
    skip_edges: tuple[tuple[str, str], ...] = ()  # (slot, earlier slot or "input" whose output it adds)
    macro: tuple[tuple[str, Any], ...] = ()  # a cell space's name and arguments; empty for a chain

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"input": str(self.input), "slots": [c.to_json() for c in self.choices]}
        if self.skip_edges:  # absent on a chain, so a chain's key does not change
            data["skips"] = dict(self.skip_edges)
        if self.macro:  # likewise absent on a chain
            data["macro"] = dict(self.macro)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], space: SearchSpace | None = None) -> Architecture:
        """Rebuild from ``to_json`` output; SpecError says which field is wrong."""
        try:
            input_type = parse_type(data["input"])
            choices = tuple(Choice.of(s["slot"], s["op"], s.get("params", {})) for s in data["slots"])
            skips = tuple(sorted((str(k), str(v)) for k, v in dict(data.get("skips", {})).items()))
            macro = tuple(sorted((str(k), v) for k, v in dict(data.get("macro", {})).items()))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"not an architecture JSON object: {exc!r}") from None
        return cls(input_type, choices, space, skips, macro)

    @classmethod
    def from_nb201(cls, text: str, cells_per_stage: int = 5, channels: int = 16, classes: int = 10,
                   input: TensorType | None = None) -> Architecture:
        """The ``nb201`` space's architecture of an NB201 arch string (``|nor_conv_3x3~0|+|...``)."""
        from archetype.searchspace.spaces.nb201 import nb201_architecture, nb201_space

        space = nb201_space(input or NB201_INPUT, classes, cells_per_stage, channels)
        return nb201_architecture(space, text)

    def to_nb201(self) -> str:
        """The NB201 arch string of an architecture of the ``nb201`` space."""
        from archetype.searchspace.spaces.nb201 import nb201_string

        return nb201_string(self)

    @classmethod
    def from_fbnet(cls, layers: str | list[str] | tuple[str, ...], classes: int = 100,
                   input: TensorType | None = None) -> Architecture:
        """The ``fbnet`` space's architecture of an FBNet ``arch_str`` (22 layer choices)."""
        from archetype.searchspace.spaces.fbnet import fbnet_architecture, fbnet_space

        return fbnet_architecture(fbnet_space(input or NB201_INPUT, classes), layers)

    def to_fbnet(self) -> list[str]:
        """The 22 FBNet layer choices of an architecture of the ``fbnet`` space."""
        from archetype.searchspace.spaces.fbnet import fbnet_layers

        return fbnet_layers(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """A canonical hash: equal for equal networks, whatever the space's name."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def choice(self, slot: str) -> Choice:
        for c in self.choices:
            if c.slot == slot:
                return c
        raise KeyError(slot)

    def typing(self) -> list[SlotTyping]:
        """The type every slot receives and produces; TypeCheckError if ill-typed."""
        from archetype.searchspace.typecheck import infer_types

        if self.macro:
            return [t for piece in self.cell_space().piece_typing(self) for t in piece.ops]
        skips = self.skips()
        if self.space is None:
            return infer_types(self.input, self.choices, skips=skips)
        return infer_types(self.input, self.choices, self.space.output, self.space.slot_categories(), skips)

    def skips(self) -> dict[str, str]:
        """Slot -> the earlier slot (or ``input``) whose output it adds."""
        return dict(self.skip_edges)

    def encode(self) -> list[float]:
        """A fixed-length vector for predictors; needs the space that made it."""
        if self.space is None:
            raise ValueError("encode() needs the architecture's space; load it with from_json(data, space)")
        return self.space.encode(self)

    def graph(self) -> nx.DiGraph:
        """A networkx graph from the input to the output, with types and costs per node; skip
        edges carry ``kind="skip"``, the chain's edges ``kind="chain"``."""
        import networkx as nx

        if self.macro:
            return self.cell_space().graph(self)
        g = nx.DiGraph()
        g.add_node(INPUT, type=str(self.input))
        prev = INPUT
        skips = self.skips()
        for t in self.typing():
            g.add_node(
                t.slot, op=t.choice.op, params=dict(t.choice.params), category=t.category,
                n_params=t.params, macs=t.macs,
            )
            g.add_edge(prev, t.slot, type=str(t.input), kind="chain")
            if t.slot in skips:
                g.add_edge(skips[t.slot], t.slot, type=str(t.output), kind="skip")
            prev = t.slot
        g.add_node("output", type=str(self.typing()[-1].output) if self.choices else str(self.input))
        g.add_edge(prev, "output")
        return g

    def int8_slots(self) -> list[str]:
        """The slots that run int8 in deployment (the rest run fp32)."""
        return [c.slot for c in self.choices if c.precision == "int8"]

    def build(self) -> nn.Module:
        """A freshly initialised ``torch.nn.Module`` for this architecture."""
        from archetype.searchspace.network import ArchitectureNetwork

        if self.macro:
            return self.cell_space().build(self)
        return ArchitectureNetwork(self)

    def cell_space(self) -> CellSpace:
        """The cell space this architecture belongs to, rebuilt from ``macro`` if it was loaded without one."""
        from archetype.searchspace.cell import CellSpace
        from archetype.searchspace.spaces import space_of_macro

        if isinstance(self.space, CellSpace) and self.space.macro == self.macro:
            return self.space
        space = space_of_macro(self.input, dict(self.macro))
        if not isinstance(space, CellSpace):
            raise SpecError(f"architecture macro {dict(self.macro)} does not name a cell space")
        return space

    def params(self) -> int:
        return sum(t.params for t in self.typing())

    def macs(self) -> int:
        return sum(t.macs for t in self.typing())

    def summary(self) -> str:
        """One line per slot: ``slot: op(k=v, ...)``."""
        lines = []
        for c in self.choices:
            args = ", ".join(f"{k}={v}" for k, v in c.params)
            lines.append(f"{c.slot}: {c.op}({args})")
        return "\n".join(lines)
