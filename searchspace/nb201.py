"""NAS-Bench-201 and FBNet architecture strings: the field's published encodings, parsed and written."""

from __future__ import annotations

from archetype.errors import SpecError

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The five NB201 edge operations, in the benchmark's own index order."""

NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""The six cell edges (from node, to node) in arch-string order; node 0 is the input, node 3 the output."""

NB201_OPERATORS = {
    "none": "zero",
    "skip_connect": "identity",
    "nor_conv_1x1": "relu_conv_bn_1x1",
    "nor_conv_3x3": "relu_conv_bn_3x3",
    "avg_pool_3x3": "avg_pool_3x3",
}
"""Each NB201 edge operation's registered operator."""

FBNET_LAYERS = 22
FBNET_CHOICES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
"""The nine per-layer choices of the FBNet space (kernel, expansion, pointwise groups, or skip)."""


def parse_nb201(text: str) -> tuple[str, ...]:
    """The six edge operations of an NB201 arch string, in ``NB201_EDGES`` order; SpecError says what is off."""
    if not isinstance(text, str):
        raise SpecError(f"NB201 arch string must be text, got {type(text).__name__}")
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise SpecError(f"NB201 arch string {text!r}: expected 3 nodes separated by '+', found {len(nodes)}")
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise SpecError(f"NB201 arch string {text!r}: node {j} must be written |op~i|...|")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise SpecError(f"NB201 arch string {text!r}: node {j} needs {j} inputs, found {len(edges)}")
        for i, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep or src != str(i):
                raise SpecError(f"NB201 arch string {text!r}: edge {edge!r} of node {j} should read op~{i}")
            if op not in NB201_OPS:
                raise SpecError(f"NB201 arch string {text!r}: unknown operation {op!r} (one of {', '.join(NB201_OPS)})")
            ops.append(op)
    return tuple(ops)


def format_nb201(ops: tuple[str, ...] | list[str]) -> str:
    """The NB201 arch string of six edge operations given in ``NB201_EDGES`` order."""
    ops = tuple(ops)
    if len(ops) != len(NB201_EDGES) or any(op not in NB201_OPS for op in ops):
        raise SpecError(f"an NB201 cell has 6 edges, each one of {', '.join(NB201_OPS)}; got {ops!r}")
    return "+".join("|" + "|".join(f"{ops[k]}~{i}" for k, (i, j) in enumerate(NB201_EDGES) if j == node) + "|"
                    for node in (1, 2, 3))


def parse_fbnet(layers: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    """The 22 layer choices of an FBNet architecture (a list, or its text joined by spaces, commas or '-')."""
    if isinstance(layers, str):
        layers = [p for p in layers.replace(",", " ").replace("-", " ").replace("[", " ").replace("]", " ")
                  .replace("'", " ").replace('"', " ").split() if p]
    layers = tuple(str(x) for x in layers)
    if len(layers) != FBNET_LAYERS:
        raise SpecError(f"an FBNet architecture has {FBNET_LAYERS} layers, got {len(layers)}")
    for i, layer in enumerate(layers):
        if layer not in FBNET_CHOICES:
            raise SpecError(f"FBNet layer {i}: unknown choice {layer!r} (one of {', '.join(FBNET_CHOICES)})")
    return layers


def format_fbnet(layers: tuple[str, ...] | list[str]) -> str:
    """The canonical text of an FBNet architecture: its 22 choices joined by '-'."""
    return "-".join(parse_fbnet(list(layers)))
