"""``vit``: vision transformers (DeiT, ConViT, XCiT, Twins, MViTv2, SLAB attention; CaiT class-attention head)."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.types import Image, Vector


def patch_sizes(input_type: Image, wanted: tuple[int, ...] = (1, 2, 4, 7, 8)) -> tuple[int, ...]:
    """The patch sizes that tile the input exactly, with at most 64 tokens (attention stays cheap)."""
    sizes = tuple(
        p for p in wanted
        if input_type.H % p == 0 and input_type.W % p == 0 and (input_type.H // p) * (input_type.W // p) <= 64
    )
    return sizes or (max(p for p in range(1, input_type.H + 1) if input_type.H % p == 0 and input_type.W % p == 0),)


def attention_blocks() -> tuple[Candidate, ...]:
    """Token mixers from the attention family, heads and MLP ratio searched."""
    common = {"heads": (2, 4), "mlp_ratio": (2, 4)}
    return (
        Candidate.of("mhsa_block", common),
        Candidate.of("gpsa_block", common),
        Candidate.of("xca_block", common),
        Candidate.of("window_attention_block", {**common, "window": 2}),
        Candidate.of("pooling_attention_block", {**common, "pool": 2}),
        Candidate.of("linear_attention_block", common),
    )


@register_space("vit")
def vit(input_type: Image, num_classes: int) -> SearchSpace:
    """Patch embedding, three token-mixing blocks (the last two skippable), a pooled or class-attention head."""
    return SearchSpace(
        name="vit",
        input=input_type,
        output=Vector(num_classes),
        description="ViT-like: patchify, DeiT/ConViT/XCiT/Twins/MViT/SLAB attention blocks, CaiT head",
        slots=(
            Slot("embed", (Candidate.of("patchify", {"patch": patch_sizes(input_type), "width": (32, 48, 64)}),)),
            Slot("block1", attention_blocks()),
            Slot("block2", (Candidate.of("identity"), *attention_blocks())),
            Slot("block3", (Candidate.of("identity"), *attention_blocks())),
            Slot("head", (
                Candidate.of("token_head", {"classes": num_classes}),
                Candidate.of("class_token_head", {"classes": num_classes, "depth": (1, 2), "heads": (2, 4)}),
            ), categories=("head",)),
        ),
    )
