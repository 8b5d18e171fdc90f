"""``fbnet``: FBNet's 22-layer chain, each layer one of 9 choices (kernel 3/5, expansion 1/3/6, 2 groups, skip)."""

from __future__ import annotations

from archetype.errors import SpecError
from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.nb201 import FBNET_CHOICES, FBNET_LAYERS, parse_fbnet
from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector

STAGES = ((16, 1, 1), (24, 4, 1), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
"""(width, layers, stride of the stage's first layer): FBNet's widths and depths, strided for 32x32 input."""
STEM_WIDTH = 16
HEAD_WIDTH = 1504


def _layer_shapes() -> list[tuple[int, int]]:
    """(width, stride) of each of the 22 searched layers."""
    return [(w, s if k == 0 else 1) for w, n, s in STAGES for k in range(n)]


@register_space("fbnet")
def fbnet_space(input_type: Image, num_classes: int) -> SearchSpace:
    """A 3x3 stem, 22 searched FBNet layers in 7 stages, a 1x1 conv to 1504 channels and the classifier."""
    layers = tuple(
        Slot(f"layer{k}", (Candidate.of("fbnet_block", {"width": w, "stride": s, "choice": FBNET_CHOICES}),))
        for k, (w, s) in enumerate(_layer_shapes(), start=1)
    )
    return SearchSpace(
        name="fbnet",
        input=input_type,
        output=Vector(num_classes),
        description="FBNet: 22 layers of inverted residual choices (k3/k5, e1/e3/e6, 2 groups, or skip)",
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": STEM_WIDTH, "kernel": 3, "stride": 1}),)),
            *layers,
            Slot("head.conv", (Candidate.of("pointwise_conv", {"width": HEAD_WIDTH}),)),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )


def fbnet_architecture(space: SearchSpace, layers: str | list[str] | tuple[str, ...]) -> Architecture:
    """The architecture of ``space`` (an ``fbnet`` space) that an FBNet ``arch_str`` names."""
    chosen = dict(zip((f"layer{k}" for k in range(1, FBNET_LAYERS + 1)), parse_fbnet(layers), strict=True))
    choices = []
    for slot in space.slots:  # every slot has one candidate; only a layer's choice is searched
        cand = slot.candidates[0]
        params = {k: v[0] for k, v in cand.domain}
        if slot.name in chosen:
            params["choice"] = chosen[slot.name]
        choices.append(Choice.of(slot.name, cand.op, params))
    return space.validate(space.architecture(tuple(choices)))


def fbnet_layers(arch: Architecture) -> list[str]:
    """The 22 layer choices of an ``fbnet`` architecture; SpecError for any other."""
    layers = [dict(c.params).get("choice") for c in arch.choices if c.op == "fbnet_block"]
    if len(layers) != FBNET_LAYERS:
        raise SpecError(f"an FBNet architecture has {FBNET_LAYERS} fbnet_block layers, this one {len(layers)}")
    return list(parse_fbnet([str(x) for x in layers]))
