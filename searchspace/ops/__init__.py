"""The operator library, one module per architecture family; importing it registers them."""

from archetype.searchspace.ops import conv, head, mobile, pooling, residual, structural

__all__ = ["conv", "head", "mobile", "pooling", "residual", "structural"]
