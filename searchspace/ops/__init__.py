"""The operator library, one module per architecture family; importing it registers them."""

from archetype.searchspace.ops import (
    attention,
    conv,
    dynamic,
    frequency,
    head,
    layout,
    mlp,
    mobile,
    modern_conv,
    multibranch,
    pooling,
    recurrent,
    residual,
    structural,
)

__all__ = [
    "attention", "conv", "dynamic", "frequency", "head", "layout", "mlp", "mobile", "modern_conv",
    "multibranch", "pooling", "recurrent", "residual", "structural",
]
