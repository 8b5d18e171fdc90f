"""The one plug-in registry: names, look-ups that fail in one line, duplicates refused, built-ins loaded lazily."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from archetype.compress.step import STEPS, list_steps, register_step
from archetype.errors import SpecError
from archetype.registry import Registry
from archetype.runtime.data import DATASETS, FILE_FORMATS, list_datasets, register_dataset, register_file_format
from archetype.runtime.targets import TARGETS, list_targets, register_target
from archetype.searchspace.operator import OPERATORS, list_operators, operator
from archetype.searchspace.spaces import SPACES, list_spaces, register_space
from archetype.spec import SCHEDULERS
from archetype.strategies.base import STRATEGIES, list_strategies, register_strategy

EVERY_REGISTRY = [OPERATORS, STRATEGIES, STEPS, TARGETS, DATASETS, FILE_FORMATS, SPACES, SCHEDULERS]


def _double(x: int) -> int:
    return 2 * x


def _triple(x: int) -> int:
    return 3 * x


def test_add_get_and_list() -> None:
    registry: Registry[Callable[[int], int]] = Registry("multiplier")
    assert registry.add("double", _double) is _double
    assert registry.register("triple")(_triple) is _triple
    assert registry.get("triple")(2) == 6
    assert registry.names() == list(registry) == ["double", "triple"]
    assert registry.items() == [("double", _double), ("triple", _triple)]
    assert "double" in registry and "half" not in registry and len(registry) == 2


def test_an_unknown_name_fails_in_one_line_listing_the_known_ones() -> None:
    registry: Registry[Callable[[int], int]] = Registry("multiplier")
    registry.add("triple", _triple)
    registry.add("double", _double)
    with pytest.raises(SpecError) as caught:
        registry.get("half")
    assert str(caught.value) == "unknown multiplier 'half'; known: double, triple"
    with pytest.raises(SpecError) as caught:
        registry.get("ha\nlf")
    assert "\n" not in str(caught.value)
    with pytest.raises(SpecError, match=r"unknown multiplier \['double'\]"):
        registry.get(["double"])  # type: ignore[arg-type]  (an unhashable value from a YAML file)


def test_a_taken_name_is_refused_and_keeps_its_plugin() -> None:
    registry: Registry[Callable[[int], int]] = Registry("multiplier")
    registry.add("double", _double)
    with pytest.raises(SpecError, match=r"multiplier name 'double' is already registered \(to .*\._double\)"):
        registry.add("double", _triple)
    with pytest.raises(SpecError, match="already registered"):
        registry.add("double", lambda x: 2 * x)
    assert registry.get("double") is _double
    assert registry.add("double", _double) is _double  # the same object again is no conflict


def test_a_reloaded_module_registers_its_fresh_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "registry_reload_plugin.py").write_text("def halve(x):\n    return x / 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "registry_reload_plugin", raising=False)
    module = importlib.import_module("registry_reload_plugin")
    registry: Registry[Any] = Registry("multiplier")
    first = registry.add("half", module.halve)
    module = importlib.reload(module)
    assert module.halve is not first
    assert registry.add("half", module.halve) is registry.get("half") is module.halve
    sys.modules.pop("registry_reload_plugin")


def test_built_ins_load_once_on_the_first_look_up() -> None:
    calls: list[str] = []

    def load() -> None:
        calls.append("load")
        if len(calls) == 1:
            raise ImportError("a plug-in module failed to import")
        registry.add("double", _double)

    registry: Registry[Callable[[int], int]] = Registry("multiplier", load=load)
    registry.add("triple", _triple)
    assert calls == []
    with pytest.raises(ImportError):
        registry.names()
    assert registry.get("double") is _double  # the failed load was tried again
    assert "triple" in registry and registry.names() == ["double", "triple"]
    assert calls == ["load", "load"]


@pytest.mark.parametrize("registry", EVERY_REGISTRY, ids=lambda r: r.kind)
def test_every_registry_lists_names_and_finds_each(registry: Registry[Any]) -> None:
    names = registry.names()
    assert names and names == sorted(set(names)) == list(registry)
    for name, plugin in registry.items():
        assert name in registry and registry.get(name) is plugin


@pytest.mark.parametrize("registry", EVERY_REGISTRY, ids=lambda r: r.kind)
def test_every_registry_names_an_unknown_plugin_in_one_line(registry: Registry[Any]) -> None:
    with pytest.raises(SpecError) as caught:
        registry.get("no-such-plugin")
    assert str(caught.value) == f"unknown {registry.kind} 'no-such-plugin'; known: {', '.join(registry.names())}"


@pytest.mark.parametrize("registry", EVERY_REGISTRY, ids=lambda r: r.kind)
def test_every_registry_refuses_a_duplicate_name(registry: Registry[Any]) -> None:
    def impostor() -> None:
        pass

    name, plugin = registry.items()[0]
    with pytest.raises(SpecError, match=f"{registry.kind} name '{name}' is already registered"):
        registry.add(name, impostor)
    assert registry.get(name) is plugin
    assert registry.add(name, plugin) is plugin


@pytest.mark.parametrize(
    ("register", "taken"),
    [
        (register_strategy, "random"),
        (register_step, "prune"),
        (register_target, "cpu-ort"),
        (register_dataset, "digits"),
        (register_file_format, "npz"),
        (register_space, "mobile"),
        (lambda name: operator(name, family="test", paper="-"), "identity"),
    ],
    ids=["strategy", "step", "target", "data set", "file format", "space", "operator"],
)
def test_every_register_helper_refuses_a_taken_name(register: Callable[[str], Any], taken: str) -> None:
    @dataclasses.dataclass(frozen=True)
    class Impostor:
        domain: ClassVar[dict[str, Any]] = {}

    with pytest.raises(SpecError, match=f"'{taken}' is already registered"):
        register(taken)(Impostor)
    assert not hasattr(Impostor, "name")


def test_the_list_helpers_read_the_registries() -> None:
    assert list_strategies() == STRATEGIES.names()
    assert list_steps() == STEPS.names()
    assert list_targets() == TARGETS.names()
    assert list_spaces() == SPACES.names()
    assert [op.name for op in list_operators()] == sorted(OPERATORS.names(), key=lambda n: (OPERATORS.get(n).family, n))
    assert list_datasets() == [*DATASETS.names(), *(f"{scheme}:PATH" for scheme in FILE_FORMATS.names())]
