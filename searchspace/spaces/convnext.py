"""``convnext``: modern, large-kernel conv stages (ConvNeXt V1/V2, RepLK, ConvMixer, HorNet, MogaNet, InceptionNeXt)."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector


def _modern_blocks() -> tuple[Candidate, ...]:
    return (
        Candidate.of("convnext_block", {"kernel": (3, 7)}),
        Candidate.of("convnext_v2_block", {"kernel": (3, 7)}),
        Candidate.of("replk_block", {"kernel": (7, 13), "small_kernel": 3}),
        Candidate.of("convmixer_block", {"kernel": (5, 9)}),
        Candidate.of("gnconv_block", {"order": (2, 3)}),
        Candidate.of("moga_block", {"mlp_ratio": (2, 4)}),
        Candidate.of("inceptionnext_block", {"band_kernel": 7, "mlp_ratio": 3}),
    )


@register_space("convnext")
def convnext(input_type: Image, num_classes: int) -> SearchSpace:
    """A patchify-like strided stem, two stages of modern blocks joined by a downsampler, then the head."""
    return SearchSpace(
        name="convnext",
        input=input_type,
        output=Vector(num_classes),
        description="ConvNeXt-like: large-kernel depthwise blocks, gated and multi-order mixers",
        slots=(
            Slot("stem", (
                Candidate.of("conv_bn_act", {"width": (32, 48), "kernel": 3}),
                Candidate.of("spd_conv", {"width": (32, 48)}),
            )),
            Slot("stage1.block1", _modern_blocks()),
            Slot("stage1.block2", (Candidate.of("identity"), *_modern_blocks())),
            Slot("stage2.down", (
                Candidate.of("strided_conv", {"width": (64, 96)}),
                Candidate.of("spd_conv", {"width": (64, 96)}),
                Candidate.of("pool", {"kind": ("max", "avg")}),
            ), categories=("downsampling",)),
            Slot("stage2.block1", _modern_blocks()),
            Slot("stage2.block2", (Candidate.of("identity"), *_modern_blocks())),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )
