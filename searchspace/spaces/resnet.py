"""``resnet``: residual and multi-branch stages (ResNet, WRN, Res2Net, ResNeSt, DenseNet, Inception)."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector


def _residual_blocks(widths: tuple[int, ...], stride: int) -> tuple[Candidate, ...]:
    return (
        Candidate.of("basic_block", {"width": widths, "stride": stride}),
        Candidate.of("bottleneck", {"width": widths, "stride": stride}),
        Candidate.of("wide_block", {"width": widths, "stride": stride, "dropout": (0.0, 0.3)}),
        Candidate.of("res2net_block", {"width": widths, "scales": 2, "stride": stride}),
        Candidate.of("resnest_block", {"width": widths, "radix": 2, "stride": stride}),
    )


@register_space("resnet")
def resnet(input_type: Image, num_classes: int) -> SearchSpace:
    """Conv stem, two residual stages joined by a strided block or pooling, then the head."""
    return SearchSpace(
        name="resnet",
        input=input_type,
        output=Vector(num_classes),
        description="ResNet-like: basic/bottleneck/wide/Res2Net/ResNeSt blocks, dense layers, Inception",
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": (16, 32), "kernel": 3}),)),
            Slot("stage1.block1", (*_residual_blocks((32,), 1), Candidate.of("inception_block", {"width": 32}))),
            Slot("stage1.block2", (Candidate.of("identity"), *_residual_blocks((32,), 1),
                                   Candidate.of("dense_layer", {"growth": (16, 32)}))),
            Slot("stage2.down", (*_residual_blocks((64,), 2), Candidate.of("pool", {"kind": ("max", "avg")})),
                 categories=("downsampling",)),
            Slot("stage2.block1", (Candidate.of("identity"), *_residual_blocks((64,), 1))),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )
