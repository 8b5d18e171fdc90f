"""``pool-positions``: three conv blocks, each followed by pooling or not: the downsampling positions are searched."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector


@register_space("pool-positions")
def pool_positions(input_type: Image, num_classes: int) -> SearchSpace:
    """conv, pool?, conv, pool?, conv, pool?, head: widths, kernels and the downsampling positions are searched.

    The space of the balanced-mixture paper's experiment (ResNet pooling positions), scaled to small images:
    one shared supernet ranks such candidates badly, since each conv serves maps of several resolutions.
    """
    def conv(widths: tuple[int, ...]) -> tuple[Candidate, ...]:
        return (Candidate.of("conv_bn_act", {"width": widths, "kernel": (3, 5), "stride": 1}),)

    pool = (Candidate.of("identity"), Candidate.of("pool", {"kind": "max"}))
    return SearchSpace(
        name="pool-positions",
        input=input_type,
        output=Vector(num_classes),
        description="3 conv blocks, each optionally followed by 2x max pooling: downsampling positions searched",
        slots=(
            Slot("conv1", conv((8, 16, 24))),
            Slot("pool1", pool),
            Slot("conv2", conv((16, 24, 32))),
            Slot("pool2", pool),
            Slot("conv3", conv((16, 32, 48))),
            Slot("pool3", pool),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )
