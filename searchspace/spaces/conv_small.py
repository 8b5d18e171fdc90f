"""``conv-small``: a two-stage convnet space sized for small images (digits 8x8, MNIST 28x28)."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector


def _blocks(widths: tuple[int, ...], stride: int = 1) -> tuple[Candidate, ...]:
    return (
        Candidate.of("conv_bn_act", {"width": widths, "kernel": (3, 5), "stride": stride}),
        Candidate.of("dwsep_conv", {"width": widths, "kernel": (3, 5), "stride": stride}),
        Candidate.of("inverted_residual", {"width": widths, "expand": (3, 6), "kernel": (3, 5), "stride": stride}),
        Candidate.of("basic_block", {"width": widths, "stride": stride}),
    )


@register_space("conv-small")
def conv_small(input_type: Image, num_classes: int) -> SearchSpace:
    """Stem, a stage, a downsampling slot, a stage of one or two blocks, and a classifier head."""
    return SearchSpace(
        name="conv-small",
        input=input_type,
        output=Vector(num_classes),
        description="conv stem, 2 stages of conv/mobile/residual blocks, pooling or strided downsampling",
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": (8, 16, 24), "kernel": 3, "stride": 1}),)),
            Slot("stage1.block1", _blocks((16, 24, 32))),
            Slot(
                "stage1.down",
                (Candidate.of("pool", {"kind": ("max", "avg")}), *_blocks((24, 32, 48), stride=2)),
                categories=("downsampling",),
            ),
            Slot("stage2.block1", _blocks((32, 48, 64))),
            Slot("stage2.block2", (Candidate.of("identity"), *_blocks((32, 48, 64)))),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )
