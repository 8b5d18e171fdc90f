"""The dependency rule, read from every module's imports (parsed, never imported): each room imports only the
rooms below it, and no module imports another package's private names."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DRIVER = ("archetype.search", "archetype.cli", "archetype.tune", "archetype.oneshot", "archetype.latency_screen",
          "archetype.latency_tables", "archetype.latency_predictor")
"""The search driver's modules: they run in the driver process and write the store."""

STORE = ("archetype.store",)
FORBIDDEN = {  # package -> module prefixes it must not import
    "archetype.worker": ("archetype.compress", "archetype.dashboard", *STORE, *DRIVER),
    "archetype.compress": ("archetype.worker", "archetype.dashboard", *STORE, *DRIVER),
    "archetype.runtime": ("archetype.worker", "archetype.compress", "archetype.strategies", "archetype.dashboard",
                          *STORE, *DRIVER),
    "archetype.searchspace": ("archetype.worker", "archetype.compress", "archetype.runtime", "archetype.strategies",
                              "archetype.dashboard", *STORE, *DRIVER),
    "archetype.strategies": ("archetype.worker", "archetype.compress", "archetype.runtime", "archetype.dashboard",
                             *STORE, *DRIVER),
    "archetype.store": ("archetype.worker", "archetype.compress", "archetype.runtime", "archetype.strategies",
                        "archetype.searchspace", "archetype.dashboard", *DRIVER),
}
DASHBOARD_READS = ("archetype.dashboard", "archetype.store", "archetype.errors", "archetype.result",
                   "archetype.objectives", "archetype.pareto", "archetype.searchspace")
"""All the dashboard imports: the store and the definitions it shows (feasibility, fronts, architectures)."""


@dataclass(frozen=True)
class Import:
    """One name a module imports: ``module`` (absolute), ``name`` (None for ``import module``) and its line."""

    importer: str
    module: str
    name: str | None
    line: int


def package_of(module: str) -> str:
    """The room a module lives in: ``archetype.<package>``, or ``archetype`` for the driver's own modules."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module in ROOMS else "archetype"


def modules(root: Path = ROOT) -> Iterator[tuple[str, Path]]:
    """Every module of the distribution as (dotted name, file), from pyproject's package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in config["package-dir"].items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if package == "archetype" and parts and f"archetype.{parts[0]}" in config["package-dir"]:
                continue  # a room of its own, listed under its own name
            yield ".".join((package, *parts)).removesuffix(".__init__"), path


def imports(module: str, path: Path) -> Iterator[Import]:
    """The project imports of one file, relative ones resolved, function-level ones included."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                target = ".".join([*base, target] if target else base)
            for alias in node.names:
                yield Import(module, target, alias.name, node.lineno)


def private_uses(module: str, path: Path) -> Iterator[Import]:
    """``from archetype.x import _name`` and ``alias._name`` on an imported project module, across packages."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}
    for item in imports(module, path):
        if not item.module.startswith("archetype"):
            continue
        if item.name is None:
            continue
        if item.name.startswith("_") and not item.name.startswith("__"):
            yield item
        aliases[item.name] = f"{item.module}.{item.name}"  # a submodule imported by name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("archetype") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield Import(module, aliases[node.value.id], node.attr, node.lineno)


def violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks the rule, as ``file:line: importer imports target``."""
    found = []
    for module, path in modules(root):
        where = f"{path.relative_to(root)}"
        package = package_of(module)
        for item in imports(module, path):
            target = item.module if item.name is None else f"{item.module}.{item.name}"
            if not target.startswith("archetype"):
                continue
            forbidden = FORBIDDEN.get(package, ())
            if package == "archetype.dashboard" and not _within(target, DASHBOARD_READS):
                found.append(f"{where}:{item.line}: the dashboard imports {target}")
            elif _within(target, forbidden) or (_within(target, ("archetype.dashboard",))
                                                and module != "archetype.cli" and package != "archetype.dashboard"):
                found.append(f"{where}:{item.line}: {package} imports {target}")
            elif _within(target, ("archetype.cli",)) and module not in ("archetype.cli", "archetype.__main__"):
                found.append(f"{where}:{item.line}: {module} imports the CLI")
        for item in private_uses(module, path):
            if package_of(item.module) != package:
                found.append(f"{where}:{item.line}: {module} uses {item.module}'s private {item.name}")
    return found


ROOMS = {"archetype.searchspace", "archetype.strategies", "archetype.worker", "archetype.runtime",
         "archetype.compress", "archetype.dashboard", "archetype.store"}


def _within(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def test_every_room_imports_only_what_the_rule_allows() -> None:
    assert list(modules()), "no modules found from pyproject's package-dir"
    assert violations() == []


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        ("worker/bad.py", "from archetype.compress.step import Budget\n", "worker imports archetype.compress"),
        ("worker/bad.py", "def f():\n    from archetype.store import Store\n", "worker imports archetype.store"),
        ("worker/bad.py", "import archetype.tune\n", "archetype.worker imports archetype.tune"),
        ("compress/bad.py", "from archetype.worker import evaluator\n", "archetype.compress imports archetype.worker"),
        ("runtime/bad.py", "from archetype.strategies import Strategy\n", "imports archetype.strategies"),
        ("searchspace/bad.py", "from archetype.runtime.data import Split\n", "imports archetype.runtime"),
        ("strategies/bad.py", "from archetype.worker.tabular import x\n", "imports archetype.worker"),
        ("dashboard/bad.py", "from archetype.worker.evaluator import Budget\n", "the dashboard imports"),
        ("compress/bad.py", "from archetype.searchspace.ops.mobile import _Hidden\n", "private _Hidden"),
        ("compress/bad.py", "from archetype.runtime import targets\nx = targets._TARGETS\n", "private _TARGETS"),
        ("archetype/bad.py", "from archetype.cli import main\n", "archetype.bad imports the CLI"),
        ("archetype/bad.py", "from archetype.dashboard.app import create_app\n", "imports archetype.dashboard"),
    ],
)
def test_a_violation_is_reported(tmp_path: Path, file: str, source: str, expected: str) -> None:
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / file).parent.mkdir(parents=True)
    (tmp_path / file).write_text(source)
    (tmp_path / "worker" / "fine.py").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "worker" / "fine.py").write_text("from archetype.runtime.data import Split\nfrom . import fine\n")
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0] and found[0].startswith(f"{file}:"), found
