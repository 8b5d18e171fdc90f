"""Predefined search spaces, by name, and loading a space from YAML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from archetype.errors import SpecError
from archetype.registry import Registry
from archetype.searchspace.space import SearchSpace
from archetype.searchspace.types import Image

SpaceFactory = Callable[[Image, int], SearchSpace]
"""Makes a space for an input type and a number of classes."""


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


SPACES: Registry[SpaceFactory] = Registry("space", load=_load_builtin)
"""Every predefined space's factory by name; the built-in ones are imported on the first look-up."""


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Register a space factory under ``name``."""
    return SPACES.register(name)


def list_spaces() -> list[str]:
    return SPACES.names()


def get_space(name_or_path: str, input_type: Image, num_classes: int) -> SearchSpace:
    """A predefined space by name, or a space from a ``.yaml``/``.yml`` file, fitted to the data."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        from archetype.searchspace.yaml_space import load_space_yaml

        return load_space_yaml(name_or_path, input_type, num_classes)
    try:
        factory = SPACES.get(name_or_path)
    except SpecError as exc:
        raise SpecError(f"{exc} (or a path to a .yaml file)") from None
    return factory(input_type, num_classes)


def space_of_macro(input_type: Image, macro: dict[str, Any]) -> SearchSpace:
    """Rebuild a cell space from the ``macro`` its architectures carry (its name, classes and arguments)."""
    args = dict(macro)
    name, classes = args.pop("space", None), args.pop("classes", None)
    if str(name) not in SPACES or not isinstance(classes, int):
        raise SpecError(f"architecture macro {macro!r} does not name a predefined space and its classes")
    try:
        return SPACES.get(str(name))(input_type, classes, **args)  # type: ignore[call-arg]
    except TypeError as exc:
        raise SpecError(f"architecture macro {macro!r}: {exc}") from None
