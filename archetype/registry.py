"""One registry class for every kind of plug-in (operators, strategies, steps, targets, data sets, spaces, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from archetype.errors import SpecError

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Plug-ins of one ``kind`` by name, the built-in ones imported by ``load`` on first look-up.

    A name is taken once: registering another object under it raises SpecError. Registering the same
    object again is allowed, and so is its fresh copy from a reloaded module (same module and qualified
    name), which replaces it."""

    def __init__(self, kind: str, load: Callable[[], object] | None = None) -> None:
        self.kind = kind
        self._load = load
        self._entries: dict[str, T] = {}

    def add(self, name: str, plugin: T) -> T:
        """Register ``plugin`` under ``name``; ``plugin`` back."""
        taken = self._entries.get(name, plugin)
        if taken is not plugin and (_origin(plugin) is None or _origin(plugin) != _origin(taken)):
            raise SpecError(f"{self.kind} name {name!r} is already registered (to {_label(taken)})")
        self._entries[name] = plugin
        return plugin

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers what it decorates under ``name``."""
        return lambda plugin: self.add(name, plugin)

    def register_named(self, name: str) -> Callable[[C], C]:
        """A class decorator that registers the class under ``name`` and sets its ``name`` to it, so that
        an instance knows what it was looked up as."""

        def decorate(cls: C) -> C:
            self.add(name, cls)  # type: ignore[arg-type]
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorate

    def get(self, name: str) -> T:
        """The plug-in called ``name``; SpecError in one line naming the known ones otherwise."""
        self._load_builtin()
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name, e.g. a list from YAML
            raise SpecError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load_builtin()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, plug-in) pairs, sorted by name."""
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        self._load_builtin()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"

    def _load_builtin(self) -> None:
        load, self._load = self._load, None
        if load is not None:
            try:
                load()
            except BaseException:
                self._load = load  # a failed import is tried again on the next look-up
                raise


def _origin(plugin: object) -> tuple[str, str] | None:
    """Where a top-level function or class is defined; None for anything else (lambdas, locals, instances)."""
    module, qualname = getattr(plugin, "__module__", None), getattr(plugin, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    return module, qualname


def _label(plugin: object) -> str:
    origin = _origin(plugin)
    return f"{origin[0]}.{origin[1]}" if origin else repr(plugin)
