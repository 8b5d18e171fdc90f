"""Stores on real databases: a SQLite file in a temporary folder, and a fresh database on a PostgreSQL server.

Every test that takes ``url`` (or ``store``, ``study``) runs once on each backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.store import Store

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "archetype.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    db_path.parent.mkdir()
    return f"sqlite:///{db_path}"


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store: a new SQLite file, or a new PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@pytest.fixture
def query(url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run one SQL statement on ``url`` outside the store (committed); its rows, if it returns any."""

    def run(statement: str, **params: Any) -> list[tuple[Any, ...]]:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                result = connection.execute(text(statement), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    return run


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
