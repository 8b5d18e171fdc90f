"""The operator library, one module per architecture family; importing it registers them."""

from archetype.searchspace.ops import (
    attention,
    cell_edges,
    clustering,
    conv,
    dynamic,
    frequency,
    head,
    hypercomplex,
    kan,
    layout,
    mlp,
    mobile,
    modern_conv,
    multibranch,
    pooling,
    recurrent,
    residual,
    structural,
    volumetric,
)

__all__ = [
    "attention", "cell_edges", "clustering", "conv", "dynamic", "frequency", "head", "hypercomplex", "kan", "layout",
    "mlp", "mobile", "modern_conv", "multibranch", "pooling", "recurrent", "residual", "structural",
    "volumetric",
]
