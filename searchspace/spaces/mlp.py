"""``mlp``: all-MLP token mixers (MLP-Mixer, ResMLP, gMLP) with a RepMLP stem option."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.spaces.vit import patch_sizes
from archetype.searchspace.types import Image, Vector


def mlp_blocks() -> tuple[Candidate, ...]:
    """Token mixers from the MLP family."""
    return (
        Candidate.of("mixer_block", {"token_hidden": (32, 64), "mlp_ratio": (2, 4)}),
        Candidate.of("resmlp_block", {"mlp_ratio": (2, 4)}),
        Candidate.of("gmlp_block", {"mlp_ratio": (2, 4)}),
    )


@register_space("mlp")
def mlp(input_type: Image, num_classes: int) -> SearchSpace:
    """A conv stem (optionally RepMLP), patch embedding, three MLP blocks, a pooled head."""
    return SearchSpace(
        name="mlp",
        input=input_type,
        output=Vector(num_classes),
        description="MLP-only token mixing: MLP-Mixer, ResMLP, gMLP; RepMLP on the stem's map",
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": (16, 32), "kernel": 3}),)),
            Slot("stem.mixer", (Candidate.of("identity"), Candidate.of("repmlp_block", {"partition": 4, "groups": 4}))),
            Slot("embed", (Candidate.of("patchify", {"patch": patch_sizes(input_type), "width": (32, 64)}),)),
            Slot("block1", mlp_blocks()),
            Slot("block2", (Candidate.of("identity"), *mlp_blocks())),
            Slot("block3", (Candidate.of("identity"), *mlp_blocks())),
            Slot("head", (Candidate.of("token_head", {"classes": num_classes}),), categories=("head",)),
        ),
    )
