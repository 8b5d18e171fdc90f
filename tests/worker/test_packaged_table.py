"""The digits table ships inside the package: found through importlib.resources, declared as package data."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib.resources import files
from pathlib import Path

from archetype.worker.tabular import DEFAULT_TABLE, TabularBenchmark, enumerate_space

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_table_is_package_data_of_the_worker() -> None:
    package = files("archetype.worker")
    relative = Path(str(DEFAULT_TABLE)).relative_to(Path(str(package)))
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch(str(relative), p) for p in patterns["archetype.worker"])
    assert (package / "tables" / "README.md").is_file()


def test_the_packaged_table_holds_every_architecture_of_its_space() -> None:
    table = TabularBenchmark.load()
    assert len(table) == len(list(enumerate_space(table.space))) == 300
    assert table.protocol["data"] == "digits"
