"""``mobile``: MobileNetV2 / EfficientNet-like stages of inverted residuals, MBConv and squeeze-excitation."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector


def _mobile_blocks(widths: tuple[int, ...], stride: int) -> tuple[Candidate, ...]:
    return (
        Candidate.of("inverted_residual", {"width": widths, "expand": (1, 3, 6), "kernel": (3, 5), "stride": stride}),
        Candidate.of("mbconv", {"width": widths, "expand": (4, 6), "kernel": (3, 5), "stride": stride}),
        Candidate.of("dwsep_conv", {"width": widths, "kernel": (3, 5), "stride": stride}),
        Candidate.of("condconv", {"width": widths, "kernel": 3, "experts": 4, "stride": stride}),
    )


@register_space("mobile")
def mobile(input_type: Image, num_classes: int) -> SearchSpace:
    """Stem, three stages (the last two open with a stride-2 block), optional SE, 1x1 expansion and head."""
    return SearchSpace(
        name="mobile",
        input=input_type,
        output=Vector(num_classes),
        description="MobileNetV2/EfficientNet-like: inverted residuals, MBConv, CondConv, squeeze-excitation",
        slots=(
            Slot(
                "stem", (Candidate.of("conv_bn_act", {"width": (16, 24), "kernel": 3, "act": ("relu", "hardswish")}),)
            ),
            Slot("stage1.block1", _mobile_blocks((16, 24), 1)),
            Slot("stage2.down", _mobile_blocks((24, 32), 2), categories=("downsampling",)),
            Slot("stage2.block1", (Candidate.of("identity"), *_mobile_blocks((24, 32), 1))),
            Slot("stage2.se", (Candidate.of("identity"), Candidate.of("se_block", {"reduction": (4, 8)}))),
            Slot("stage3.down", _mobile_blocks((40, 48, 64), 2), categories=("downsampling",)),
            Slot("stage3.block1", (Candidate.of("identity"), *_mobile_blocks((40, 48, 64), 1))),
            Slot("expand", (Candidate.of("pointwise_conv", {"width": (96, 128), "act": "hardswish"}),)),
            Slot("head", (Candidate.of("classifier_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )
