"""Conv chains read from a model's ``torch.fx`` graph, whatever its module classes.

The graph is walked in execution order. Conv2d, BatchNorm2d, activation and
pooling calls on the running tensor form conv units; an addition of that tensor
and an earlier unit's output is an identity residual, and an addition of a
conv (+ batch norm) of an earlier output a projected residual. The first other
operation on the running tensor starts the tail (the head), which becomes a
``GraphModule`` of the remaining nodes. Anything else (a branch that is not a
residual, a functional convolution, a conv after the head) is refused naming
the graph node. The chain is finally checked to compute what the model does.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from archetype.compress.conv_chain import (
    ACTIVATION_TYPES,
    POOLING_TYPES,
    ConvChain,
    ConvUnit,
    Pair,
    UnsupportedNetworkError,
    chain_network,
    zero_padded,
)

HINT = "; run --pipeline without depth"
_MONOTONE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh)  # commute with max pooling

_FUNCTION_ACTIVATIONS: dict[object, type[nn.Module]] = {
    F.relu: nn.ReLU, torch.relu: nn.ReLU, torch.relu_: nn.ReLU, F.relu6: nn.ReLU6, F.silu: nn.SiLU,
    F.hardswish: nn.Hardswish, F.gelu: nn.GELU, torch.sigmoid: nn.Sigmoid, torch.tanh: nn.Tanh,
    F.leaky_relu: nn.LeakyReLU,
}
_METHOD_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu_": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
}
_FUNCTION_POOLING: dict[object, type[nn.Module]] = {F.max_pool2d: nn.MaxPool2d, F.avg_pool2d: nn.AvgPool2d}
_ADDS = (operator.add, operator.iadd, torch.add)
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d)


def trace_graph(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` of ``model``; UnsupportedNetworkError naming where tracing stopped."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError... from user code
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise UnsupportedNetworkError(
            f"{type(model).__name__}: its graph cannot be traced ({type(exc).__name__}: "
            f"{lines[0] if lines else ''}){HINT}"
        ) from None


@dataclass
class _Branch:
    """A conv (+ batch norm) applied to an earlier unit's output: a residual's projection, once added."""

    source: int
    unit: ConvUnit


class _GraphReader:
    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.root = graph_module
        self.modules = dict(graph_module.named_modules())
        self.units: list[ConvUnit] = []
        self.residuals: list[Pair] = []
        self.shortcuts: dict[Pair, ConvUnit] = {}
        self.boundary: dict[fx.Node, int] = {}
        self.branches: dict[fx.Node, _Branch] = {}
        self.current: fx.Node | None = None
        self.aliases: dict[fx.Node, fx.Node] = {}  # pass-through nodes (identity, dropout) -> what they pass
        self.order = {node: index for index, node in enumerate(graph_module.graph.nodes)}
        self.stage = ""  # what the last unit holds so far: conv, bn, act, post
        self.seen: set[int] = set()

    def read(self) -> tuple[list[fx.Node], fx.Node]:
        """Walk the graph into units; return the tail's nodes and the node that feeds the tail."""
        nodes = list(self.root.graph.nodes)
        inputs = [n for n in nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise UnsupportedNetworkError(f"the model takes {len(inputs)} inputs; depth compression takes one")
        self.current = inputs[0]
        self.boundary[inputs[0]] = 0
        for index, node in enumerate(nodes):
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                return [], self.current
            if not self._absorb(node):
                if not self.units:
                    raise UnsupportedNetworkError(f"graph node {_label(node)} ({_what(node, self.modules)}) comes "
                                                  f"before any convolution{HINT}")
                tensor_inputs = [a for a in node.all_input_nodes if a.op != "get_attr"]
                if self.current not in tensor_inputs:
                    raise UnsupportedNetworkError(f"graph node {_label(node)} ({_what(node, self.modules)}) reads "
                                                  f"a tensor of the conv chain but is not a conv unit or a residual "
                                                  f"add{HINT}")
                return [n for n in nodes[index:] if n.op != "output"], self.current
        raise UnsupportedNetworkError("the graph has no output")

    def _absorb(self, node: fx.Node) -> bool:
        """Take ``node`` into the chain; False when it is the first node of the tail."""
        module = self.modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
        first = self._resolve(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if isinstance(module, nn.Conv2d):
            self._conv(node, module, first)
        elif isinstance(module, nn.BatchNorm2d):
            self._norm(node, module, first)
        elif isinstance(module, ACTIVATION_TYPES) or _functional_activation(node) is not None:
            if first is not self.current:
                return first in self.branches and self._refuse(node, "an activation on a branch off the conv chain")
            self._act(node, module if module is not None else _functional_activation(node))  # type: ignore[arg-type]
        elif isinstance(module, POOLING_TYPES) or (node.op == "call_function" and node.target in _FUNCTION_POOLING):
            if first is not self.current:
                return False
            if module is None:
                module = _FUNCTION_POOLING[node.target](*node.args[1:], **node.kwargs)  # type: ignore[index]
            self._pool(node, module)
        elif isinstance(module, _PASS_THROUGH) and first is not None:
            if first is self.current and len(first.users) == 1:
                self.current = node
            else:
                self.aliases[node] = first
        elif _is_add(node):
            return self._add(node)
        elif isinstance(module, nn.Module) and any(isinstance(m, nn.Conv2d) for m in module.modules()):
            self._refuse(node, f"a {type(module).__name__} that fx keeps whole")
        elif node.op == "call_function" and node.target in (F.conv2d, torch.conv2d):
            self._refuse(node, "a functional convolution")
        else:
            return False
        return True

    def _resolve(self, node: fx.Node) -> fx.Node:
        while node in self.aliases:
            node = self.aliases[node]
        return node

    def _refuse(self, node: fx.Node, what: str) -> bool:
        raise UnsupportedNetworkError(f"graph node {_label(node)} is {what}, which depth compression cannot merge"
                                      f"{HINT}")

    def _is_shortcut(self, conv: fx.Node) -> bool:
        """Whether ``conv`` (+ a batch norm) feeds an addition while its input goes on to a later main path."""
        node = conv
        if len(node.users) == 1 and isinstance(self.modules.get(next(iter(node.users)).target), nn.BatchNorm2d):
            node = next(iter(node.users))
        if len(node.users) != 1 or not _is_add(add := next(iter(node.users))):
            return False
        source = conv.args[0]
        return any(user is not conv and user is not add and self.order[user] > self.order[conv]
                   for user in source.users)  # type: ignore[union-attr]

    def _own(self, node: fx.Node, module: nn.Module) -> None:
        if id(module) in self.seen:
            self._refuse(node, f"a second call of module '{node.target}' (shared weights)")
        self.seen.add(id(module))

    def _conv(self, node: fx.Node, conv: nn.Conv2d, first: fx.Node | None) -> None:
        self._own(node, conv)
        zero_padded(str(node.target), conv)
        if first is self.current and not self._is_shortcut(node):
            self.boundary.setdefault(first, len(self.units))
            self.units.append(ConvUnit(conv, name=str(node.target)))
            self.current, self.stage = node, "conv"
        elif first is self.current:
            self.boundary.setdefault(first, len(self.units))
            self.branches[node] = _Branch(self.boundary[first], ConvUnit(conv, name=str(node.target)))
        elif first in self.boundary:
            self.branches[node] = _Branch(self.boundary[first], ConvUnit(conv, name=str(node.target)))
        else:
            self._refuse(node, "a convolution of a tensor that is not the output of a conv unit")

    def _norm(self, node: fx.Node, bn: nn.BatchNorm2d, first: fx.Node | None) -> None:
        self._own(node, bn)
        if not self.units and first is self.current:
            self._refuse(node, "a batch norm before any convolution")
        if first is self.current and self.stage == "conv":
            self.units[-1].bn = bn
            self.current, self.stage = node, "bn"
        elif first in self.branches and self.branches[first].unit.bn is None:
            branch = self.branches.pop(first)  # type: ignore[arg-type]
            branch.unit.bn = bn
            self.branches[node] = branch
        else:
            self._refuse(node, "a batch norm that does not follow a convolution directly")

    def _act(self, node: fx.Node, act: nn.Module) -> None:
        if not self.units:
            self._refuse(node, "an activation before any convolution")
        unit = self.units[-1]
        if self.current in self.boundary:
            self._refuse(node, "an activation after a branch reads the tensor before it")
        if unit.act is not None:
            self._refuse(node, "a second activation after one convolution")
        if unit.post is not None and not (isinstance(unit.post, nn.MaxPool2d) and isinstance(act, _MONOTONE)):
            self._refuse(node, "an activation after pooling")
        unit.act = act
        self.current, self.stage = node, "act"

    def _pool(self, node: fx.Node, pool: nn.Module) -> None:
        if not self.units:
            self._refuse(node, "a pooling layer before any convolution")
        if self.current in self.boundary:
            self._refuse(node, "a pooling layer after a branch reads the tensor before it")
        if self.units[-1].post is not None:
            self._refuse(node, "a second pooling layer after one convolution")
        self.units[-1].post = pool
        self.current, self.stage = node, "post"

    def _add(self, node: fx.Node) -> bool:
        operands = [self._resolve(a) for a in node.args if isinstance(a, fx.Node)]
        if len(operands) != 2 or node.kwargs.get("alpha", 1) != 1 or self.current not in operands:
            if self.current in operands:
                return False  # the running tensor plus a constant: the head's business
            return self._refuse(node, "an addition of tensors outside the conv chain")
        other = operands[1] if operands[0] is self.current else operands[0]
        if self.stage not in ("conv", "bn"):
            self._refuse(node, "a residual added after an activation or pooling")
        end = len(self.units)
        if other in self.branches:
            branch = self.branches.pop(other)
            self.residuals.append((branch.source, end))
            self.shortcuts[(branch.source, end)] = branch.unit
        elif other in self.boundary and other is not self.current:
            self.residuals.append((self.boundary[other], end))
        else:
            self._refuse(node, "an addition of a tensor that is not an earlier conv unit's output")
        self.current, self.stage = node, "add"
        return True


def _functional_activation(node: fx.Node) -> nn.Module | None:
    """The module computing the activation a function or method call ``node`` applies, or None."""
    if node.op == "call_function" and node.target in _FUNCTION_ACTIVATIONS:
        kind = _FUNCTION_ACTIVATIONS[node.target]  # type: ignore[index]
        if kind is nn.LeakyReLU:
            return nn.LeakyReLU(node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01))
        return kind()
    if node.op == "call_method" and node.target in _METHOD_ACTIVATIONS and len(node.args) == 1:
        return _METHOD_ACTIVATIONS[node.target]()  # type: ignore[index]
    return None


def _label(node: fx.Node) -> str:
    """How a user finds the node: the module's path for a module call, else the node's name."""
    return f"'{node.target}'" if node.op == "call_module" else f"'{node.name}'"


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return True
    return node.op == "call_method" and node.target in ("add", "add_")


def _what(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__  # type: ignore[index]
    return getattr(node.target, "__name__", str(node.target))


def _tail_module(root: fx.GraphModule, nodes: Sequence[fx.Node], feed: fx.Node, chain_nodes: set[fx.Node]) -> nn.Module:
    """The nodes after the chain as a module of one input (the chain's output)."""
    if not nodes:
        return nn.Identity()
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {feed: graph.placeholder("x")}
    modules = dict(root.named_modules())

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":
                raise UnsupportedNetworkError(f"the head reads graph node {_label(node)} from inside the conv "
                                              f"chain; only the chain's last output may feed it{HINT}")
            env[node] = graph.node_copy(node, lookup)
        return env[node]

    for node in nodes:
        if node.op == "call_module" and any(isinstance(m, nn.Conv2d) for m in modules[node.target].modules()):  # type: ignore[index]
            raise UnsupportedNetworkError(f"graph node {_label(node)} is a convolution after the head begins at "
                                          f"{_label(nodes[0])}{HINT}")
        if node.op == "get_attr":
            continue
        for source in node.all_input_nodes:
            if source in chain_nodes and source is not feed:
                raise UnsupportedNetworkError(f"graph node {_label(node)} reads '{source.name}' from inside the "
                                              f"conv chain; only the chain's last output may feed the head{HINT}")
        env[node] = graph.node_copy(node, lookup)
    output = next(n for n in root.graph.nodes if n.op == "output")
    graph.output(fx.map_arg(output.args[0], lookup))
    return fx.GraphModule(root, graph, class_name="ChainTail")


def extract_graph_chain(model: nn.Module, input_shape: Sequence[int]) -> ConvChain:
    """The conv chain of any traceable ``model``; its units share their modules with it."""
    traced = trace_graph(model)
    reader = _GraphReader(traced)
    tail_nodes, feed = reader.read()
    if reader.branches:
        node = next(iter(reader.branches))
        raise UnsupportedNetworkError(f"graph node {_label(node)} starts a branch that is not added back as a "
                                      f"residual{HINT}")
    tail_set = set(tail_nodes)
    chain_nodes = {n for n in traced.graph.nodes if n.op not in ("get_attr", "output") and n not in tail_set}
    if not reader.units:
        raise UnsupportedNetworkError(f"{type(model).__name__}: its graph has no convolution to compress")
    tail = _tail_module(traced, tail_nodes, feed, chain_nodes)
    chain = ConvChain(reader.units, reader.residuals, tail, tuple(int(s) for s in input_shape),
                      shortcuts=reader.shortcuts)
    check_same_function(model, chain)
    return chain


def check_same_function(model: nn.Module, chain: ConvChain, atol: float = 1e-4) -> None:
    """UnsupportedNetworkError unless the chain, unit by unit, computes what ``model`` does (eval mode)."""
    network = chain_network(chain, [(k - 1, k) for k in range(1, chain.layers + 1)]).eval()
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(2, *chain.input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected, actual = model(x), network(x)
    finally:
        model.train(was_training)
    if not isinstance(expected, torch.Tensor) or expected.shape != actual.shape or not torch.allclose(
        actual, expected, atol=atol, rtol=1e-3
    ):
        raise UnsupportedNetworkError(f"{type(model).__name__}: the conv chain read from its graph does not compute "
                                      f"what the model does{HINT}")


def removable_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The submodules computing ``x + f(x)`` on their one input, or an activation of it, by name, each with what
    computes the same without ``f`` (an identity, or that activation): the residual blocks a depth choice may drop."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) or not any(module.children()):
            continue
        try:
            graph = trace_graph(module).graph
        except UnsupportedNetworkError:  # a block fx cannot trace is not offered
            continue
        inputs = [node for node in graph.nodes if node.op == "placeholder"]
        result = next(node for node in graph.nodes if node.op == "output").args[0]
        stand_in: nn.Module = nn.Identity()
        if isinstance(result, fx.Node) and (activation := _activation_of(result, module)) is not None:
            stand_in, result = activation, result.args[0]
        if (len(inputs) == 1 and isinstance(result, fx.Node) and _is_add(result) and len(result.args) == 2
                and inputs[0] in result.args and result.args[0] is not result.args[1] and not result.kwargs):
            found[name] = stand_in
    return found


def _activation_of(node: fx.Node, owner: nn.Module) -> nn.Module | None:
    """A fresh module computing the activation ``node`` applies, or None if it applies none."""
    if node.op == "call_module":
        target = owner.get_submodule(str(node.target))
        return copy.deepcopy(target) if isinstance(target, ACTIVATION_TYPES) else None
    return _functional_activation(node)


def remove_blocks(model: nn.Module, stand_ins: dict[str, nn.Module]) -> nn.Module:
    """Replace each named submodule of ``model`` in place by its stand-in (from ``removable_blocks``)."""
    for name, stand_in in stand_ins.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, copy.deepcopy(stand_in))
    return model
