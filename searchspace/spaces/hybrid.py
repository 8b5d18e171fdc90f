"""``hybrid``: conv stages, then token mixers from every family (attention, MLP, state-space, frequency)."""

from __future__ import annotations

from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import register_space
from archetype.searchspace.spaces.mlp import mlp_blocks
from archetype.searchspace.spaces.vit import attention_blocks
from archetype.searchspace.types import Image, Vector


def _map_mixers() -> tuple[Candidate, ...]:
    """Image-level mixers: frequency, dynamic conv and image attention."""
    return (
        Candidate.of("identity"),
        Candidate.of("wavemix_block", {"mlp_ratio": 2}),
        Candidate.of("global_filter_block", {"mlp_ratio": 2}),
        Candidate.of("spectral_pool_block", {"radii": 2, "mlp_ratio": 2}),
        Candidate.of("involution", {"kernel": 3, "groups": (1, 4)}),
        Candidate.of("deform_conv_v2", {"width": 32}),
        Candidate.of("levit_attention", {"heads": 2, "key_dim": 16}),
        Candidate.of("lambda_layer", {"heads": 2}),
    )


def _token_mixers() -> tuple[Candidate, ...]:
    return (
        *attention_blocks(),
        *mlp_blocks(),
        Candidate.of("ssm2d_block", {"state": (1, 4), "mlp_ratio": 2}),
        Candidate.of("mlstm_block", {"heads": 2, "reverse": (False, True)}),
        Candidate.of("hyena_block", {"mlp_ratio": 2}),
    )


@register_space("hybrid")
def hybrid(input_type: Image, num_classes: int) -> SearchSpace:
    """Conv stem and block, an image-level mixer, a downsampler, tokens, two token mixers, a token head."""
    return SearchSpace(
        name="hybrid",
        input=input_type,
        output=Vector(num_classes),
        description="conv stages, then mixers from any family: attention, MLP, state-space/recurrent, frequency",
        slots=(
            Slot("stem", (Candidate.of("conv_bn_act", {"width": 32, "kernel": 3}),)),
            Slot("stage1.block1", (
                Candidate.of("inverted_residual", {"width": 32, "expand": (3, 6)}),
                Candidate.of("basic_block", {"width": 32}),
                Candidate.of("convnext_block", {"kernel": (3, 7)}),
            )),
            Slot("stage1.mixer", _map_mixers()),
            Slot("stage2.down", (
                Candidate.of("strided_conv", {"width": (32, 48)}),
                Candidate.of("spd_conv", {"width": (32, 48)}),
                Candidate.of("pool", {"kind": ("max", "avg")}),
            ), categories=("downsampling",)),
            Slot("tokens", (Candidate.of("image_to_tokens"), Candidate.of("patchify", {"patch": 1, "width": (32, 48)})),
                 categories=("layout-changing",)),
            Slot("stage2.block1", _token_mixers()),
            Slot("stage2.block2", (Candidate.of("identity"), *_token_mixers())),
            Slot("head", (
                Candidate.of("token_head", {"classes": num_classes}),
                Candidate.of("class_token_head", {"classes": num_classes, "depth": 1, "heads": 2}),
            ), categories=("head",)),
        ),
    )
