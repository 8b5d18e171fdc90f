"""Stores on real SQLite files in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.store import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "archetype.db"


@pytest.fixture
def url(db_path: Path) -> str:
    db_path.parent.mkdir()
    return f"sqlite:///{db_path}"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store.open(url) as opened:
        yield opened


@pytest.fixture
def study(store: Store) -> str:
    """The name of a fresh study in ``store``."""
    store.create_study(
        "digits-1",
        space="conv-small",
        target="cpu-ort",
        objectives=DEFAULT_OBJECTIVES,
        constraints=[Constraint.parse("latency_ms<=2")],
        spec={"space": "conv-small", "trials": 8},
    )
    return "digits-1"
