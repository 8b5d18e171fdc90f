"""Predefined search spaces, by name, and loading a space from YAML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from archetype.errors import SpecError
from archetype.searchspace.space import SearchSpace
from archetype.searchspace.types import Image

SpaceFactory = Callable[[Image, int], SearchSpace]
"""Makes a space for an input type and a number of classes."""

_SPACES: dict[str, SpaceFactory] = {}


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Register a space factory under ``name``."""

    def register(factory: SpaceFactory) -> SpaceFactory:
        _SPACES[name] = factory
        return factory

    return register


def list_spaces() -> list[str]:
    _load_builtin()
    return sorted(_SPACES)


def get_space(name_or_path: str, input_type: Image, num_classes: int) -> SearchSpace:
    """A predefined space by name, or a space from a ``.yaml``/``.yml`` file, fitted to the data."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        from archetype.searchspace.yaml_space import load_space_yaml

        return load_space_yaml(name_or_path, input_type, num_classes)
    _load_builtin()
    factory = _SPACES.get(name_or_path)
    if factory is None:
        raise SpecError(
            f"unknown space '{name_or_path}'; predefined: {', '.join(sorted(_SPACES))} (or a path to a .yaml file)"
        )
    return factory(input_type, num_classes)


def space_of_macro(input_type: Image, macro: dict[str, Any]) -> SearchSpace:
    """Rebuild a cell space from the ``macro`` its architectures carry (its name, classes and arguments)."""
    _load_builtin()
    args = dict(macro)
    name, classes = args.pop("space", None), args.pop("classes", None)
    factory = _SPACES.get(str(name))
    if factory is None or not isinstance(classes, int):
        raise SpecError(f"architecture macro {macro!r} does not name a predefined space and its classes")
    try:
        return factory(input_type, classes, **args)  # type: ignore[call-arg]
    except TypeError as exc:
        raise SpecError(f"architecture macro {macro!r}: {exc}") from None


def _load_builtin() -> None:
    from archetype.searchspace.spaces import (  # noqa: F401
        conv_small,
        convnext,
        darts,
        fbnet,
        hybrid,
        mlp,
        mobile,
        nb201,
        pool_positions,
        resnet,
        vit,
    )
