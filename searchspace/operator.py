"""Operators: registered, typed families of modules.

An operator class is a frozen dataclass whose fields are its hyperparameters
(its typed signature); an instance is one concrete choice. From an input type
it gives the output type, a ``torch.nn.Module``, and parameter and MAC counts
by formula, so a space can be checked and costed before anything is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from torch import nn

from archetype.errors import SpecError
from archetype.registry import Registry
from archetype.searchspace.types import Image, TensorType, Tokens, Volume

CATEGORIES = (
    "shape-preserving",
    "channel-changing",
    "downsampling",
    "upsampling",
    "layout-changing",
    "head",
)

PRECISION = "precision"
"""A slot's numeric precision in deployment: a searched value beside the operator's hyperparameters."""
PRECISIONS = ("fp32", "int8")
SOURCE = "source"
"""The earlier node a cell edge reads, where the cell searches its edges' inputs (DARTS): a value beside the
operator's hyperparameters."""


class OperatorTypeError(TypeError):
    """The operator cannot take this input type; the checker adds the slot."""


class Operator(ABC):
    """Base of every operator; subclasses are frozen dataclasses of hyperparameters."""

    name: ClassVar[str]
    family: ClassVar[str]
    paper: ClassVar[str]
    accepts: ClassVar[tuple[type[TensorType], ...]] = (Image,)
    domain: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    """Default values searched for each hyperparameter when a space names none."""
    weighted: ClassVar[bool] = True
    """Whether the module has weights, so that a precision (``fp32``/``int8``) may be searched for it."""

    hparam_types: ClassVar[dict[str, tuple[type, ...]]]

    def __post_init__(self) -> None:
        for name, allowed in self.hparam_types.items():
            value = getattr(self, name)
            if isinstance(value, bool) and bool not in allowed:
                ok = False
            else:
                ok = isinstance(value, allowed) or (float in allowed and isinstance(value, int))
            if not ok:
                kinds = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise SpecError(
                    f"operator '{self.name}': hyperparameter '{name}' must be {kinds}, got {value!r}"
                )

    @classmethod
    def hyperparameters(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def check_input(self, x: TensorType) -> None:
        if not isinstance(x, self.accepts):
            wanted = " or ".join(t.layout for t in self.accepts)
            raise OperatorTypeError(f"operator '{self.name}' takes {wanted}, got {x}")

    @abstractmethod
    def output_type(self, x: TensorType) -> TensorType:
        """The type this operator produces from ``x``; OperatorTypeError if it cannot."""

    @abstractmethod
    def build(self, x: TensorType) -> nn.Module:
        """A fresh module that maps a batch of ``x`` to a batch of ``output_type(x)``."""

    @abstractmethod
    def params(self, x: TensorType) -> int:
        """Trainable parameters of ``build(x)``, by formula."""

    @abstractmethod
    def macs(self, x: TensorType) -> int:
        """Multiply-accumulates of one forward pass on one sample, by formula."""

    def category(self, x: TensorType) -> str:
        """The type category of this instance at input ``x``."""
        return categorize(x, self.output_type(x))


def categorize(x: TensorType, y: TensorType) -> str:
    """Name the type category of a map from ``x`` to ``y``."""
    if type(x) is not type(y):
        return "head" if y.layout == "Vector" else "layout-changing"
    if x == y:
        return "shape-preserving"
    if _extent(y) < _extent(x):
        return "downsampling"
    if _extent(y) > _extent(x):
        return "upsampling"
    return "channel-changing"


def _extent(t: TensorType) -> tuple[int, ...]:
    """The sizes a downsampler shrinks: H and W of an image, D, H and W of a volume, N of a token sequence."""
    if isinstance(t, Volume):
        return (t.D, t.H, t.W)
    if isinstance(t, Image):
        return (t.H, t.W)
    if isinstance(t, Tokens):
        return (t.N,)
    return ()


OPERATORS: Registry[type[Operator]] = Registry(
    "operator", load=lambda: importlib.import_module("archetype.searchspace.ops")
)
"""Every operator class by name; the built-in library is imported on the first look-up."""
OpClass = TypeVar("OpClass", bound=type[Operator])


def operator(name: str, *, family: str, paper: str) -> Callable[[OpClass], OpClass]:
    """Register an operator class under ``name`` (the class must be a frozen dataclass)."""

    def register(cls: OpClass) -> OpClass:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"operator {cls.__name__} must be a frozen dataclass")
        hints = typing.get_type_hints(cls)
        hparam_types = {f.name: _runtime_types(hints[f.name]) for f in dataclasses.fields(cls)}
        unknown = set(cls.domain) - set(hparam_types)
        if unknown:
            raise TypeError(f"operator {name}: domain names unknown hyperparameters {sorted(unknown)}")
        OPERATORS.add(name, cls)
        cls.name, cls.family, cls.paper, cls.hparam_types = name, family, paper, hparam_types
        return cls

    return register


def _runtime_types(hint: Any) -> tuple[type, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(typing.get_args(hint))
    return (hint,)


def get_operator(name: str) -> type[Operator]:
    """The operator class registered as ``name``; SpecError lists the known ones."""
    return OPERATORS.get(name)


def list_operators(family: str | None = None) -> list[type[Operator]]:
    """Registered operator classes, sorted by family then name."""
    ops = [c for _, c in OPERATORS.items() if family is None or c.family == family]
    return sorted(ops, key=lambda c: (c.family, c.name))


def make_operator(name: str, hparams: Mapping[str, Any]) -> Operator:
    """Instantiate operator ``name`` with ``hparams``; SpecError names a bad hyperparameter.

    A ``precision`` among ``hparams`` is the slot's, not the operator's: it is left out here."""
    cls = get_operator(name)
    hparams = {k: v for k, v in hparams.items() if k not in (PRECISION, SOURCE)}
    known = cls.hyperparameters()
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise SpecError(f"operator '{name}' has no hyperparameter {unknown[0]!r}; it takes {list(known)}")
    try:
        return cls(**hparams)
    except TypeError as exc:  # a required hyperparameter is missing
        raise SpecError(f"operator '{name}': {exc}") from None
