"""Architecture: one choice of operator and hyperparameters per slot of a space."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archetype.errors import SpecError
from archetype.searchspace.operator import PRECISION, Operator, make_operator
from archetype.searchspace.types import TensorType, parse_type

INPUT = "input"
"""The name a skip edge uses for the network's input."""

if TYPE_CHECKING:
    import networkx as nx
    from torch import nn

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

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"input": str(self.input), "slots": [c.to_json() for c in self.choices]}
        if self.skip_edges:  # absent on a chain, so a chain's key does not change
            data["skips"] = dict(self.skip_edges)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], space: SearchSpace | None = None) -> Architecture:
        """Rebuild from ``to_json`` output; SpecError says which field is wrong."""
        try:
            input_type = parse_type(data["input"])
            choices = tuple(Choice.of(s["slot"], s["op"], s.get("params", {})) for s in data["slots"])
            skips = tuple(sorted((str(k), str(v)) for k, v in dict(data.get("skips", {})).items()))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"not an architecture JSON object: {exc!r}") from None
        return cls(input_type, choices, space, skips)

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

        return ArchitectureNetwork(self)

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
