"""Fixtures shared across the suite: a throwaway PostgreSQL server for the session."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest


def _load_postgres_server() -> ModuleType:
    name = "archetype_tests_postgres_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("postgres_server.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


postgres_server_module = _load_postgres_server()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A PostgreSQL server started for this test session and removed after it; skips if none can start."""
    module = postgres_server_module
    try:
        server = module.PostgresServer()
    except module.PostgresUnavailable as exc:  # only a machine without the server binaries skips
        print(f"\nPostgreSQL tests skipped: {exc}", file=sys.stderr)
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: object) -> Iterator[str]:
    """The URL of a new empty PostgreSQL schema (a store of its own), dropped after the test."""
    url = postgres_server.create_schema()  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        postgres_server.drop_schema(url)  # type: ignore[attr-defined]
