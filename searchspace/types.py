"""Tensor types: the layout and sizes of what flows between operators.

A type is a frozen value, so two slots agree exactly when their types are equal.
``Image[C,H,W]`` is a feature map, ``Tokens[N,C]`` a token sequence and
``Vector[C]`` a flat feature or logit vector, ``Volume[C,D,H,W]`` a 3-D feature map
(a clip of frames or a scan; batch dimension implied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import ClassVar


@dataclass(frozen=True)
class TensorType:
    """Base of every tensor type; subclasses list their dimensions as fields."""

    layout: ClassVar[str] = "Tensor"

    def dims(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def shape(self, batch: int = 1) -> tuple[int, ...]:
        """The torch shape of a batch of this type."""
        return (batch, *self.dims())

    def __str__(self) -> str:
        return f"{self.layout}[{','.join(str(d) for d in self.dims())}]"

    def to_json(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Image(TensorType):
    """A feature map of C channels, H rows and W columns."""

    C: int
    H: int
    W: int
    layout: ClassVar[str] = "Image"


@dataclass(frozen=True)
class Tokens(TensorType):
    """A sequence of N tokens of C features."""

    N: int
    C: int
    layout: ClassVar[str] = "Tokens"


@dataclass(frozen=True)
class Vector(TensorType):
    """A flat vector of C features (pooled features or class logits)."""

    C: int
    layout: ClassVar[str] = "Vector"


@dataclass(frozen=True)
class Volume(TensorType):
    """A 3-D feature map of C channels over D slices (or frames) of H rows and W columns."""

    C: int
    D: int
    H: int
    W: int
    layout: ClassVar[str] = "Volume"


TENSOR_TYPES: dict[str, type[TensorType]] = {t.layout: t for t in (Image, Tokens, Vector, Volume)}
_TYPE_RE = re.compile(r"^\s*(\w+)\s*\[\s*([0-9]+(?:\s*,\s*[0-9]+)*)\s*\]\s*$")


def parse_type(text: str) -> TensorType:
    """Parse ``"Image[1,8,8]"`` into a tensor type; ValueError says what is wrong."""
    match = _TYPE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a tensor type such as 'Image[3,32,32]'")
    layout, body = match.groups()
    cls = TENSOR_TYPES.get(layout)
    if cls is None:
        raise ValueError(f"unknown tensor layout {layout!r}; known: {', '.join(TENSOR_TYPES)}")
    dims = [int(d) for d in body.split(",")]
    arity = len(fields(cls))
    if len(dims) != arity:
        raise ValueError(f"{layout} takes {arity} dimensions, got {len(dims)} in {text!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"every dimension must be positive in {text!r}")
    return cls(*dims)
