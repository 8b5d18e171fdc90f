"""Opening the store: migrations on open, SQLite settings, one-line errors for unusable URLs, sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from archetype.errors import StorageError
from archetype.store import DEFAULT_STORAGE, Store, open_engine, resolve_url, session_scope
from archetype.store.engine import migration_config
from archetype.store.models import Base, Study


def _storage_error(url: str) -> str:
    with pytest.raises(StorageError) as caught:
        open_engine(url)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _head() -> str:
    return ScriptDirectory.from_config(migration_config()).get_current_head()


Query = Callable[..., list[tuple[Any, ...]]]


def test_open_migrates_a_new_database_to_head(url: str) -> None:
    engine = open_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [_head()]
        schema = inspect(connection)
        assert {"alembic_version", "studies", "trials", "trial_metrics"} <= set(schema.get_table_names())
        indexes = [i for i in schema.get_indexes("trials") if not i.get("duplicates_constraint")]  # PostgreSQL's
        assert {i["name"] for i in indexes} == {
            "ix_trials_study_id",
            "ix_trials_study_id_arch_key",
            "ix_trials_study_id_state",
        }
        assert {i["name"] for i in schema.get_indexes("trial_metrics") if not i.get("duplicates_constraint")} == {
            "ix_trial_metrics_trial_id"
        }
        assert {tuple(u["column_names"]) for u in schema.get_unique_constraints("trials")} == {("study_id", "number")}
    engine.dispose()


def test_open_creates_the_sqlite_file(sqlite_url: str, db_path: Path) -> None:
    open_engine(sqlite_url).dispose()
    assert db_path.is_file()


def test_every_foreign_key_has_an_index_that_starts_with_it(url: str) -> None:
    engine = open_engine(url)
    schema = inspect(engine)
    for table in schema.get_table_names():
        indexed = [index["column_names"] for index in schema.get_indexes(table)]
        for foreign_key in schema.get_foreign_keys(table):
            columns = foreign_key["constrained_columns"]
            assert any(names[: len(columns)] == columns for names in indexed), (table, columns)
    engine.dispose()


def test_the_migrations_create_exactly_the_models(url: str) -> None:
    engine = open_engine(url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_downgrade_to_nothing_and_reopen(url: str) -> None:
    engine = open_engine(url)
    with engine.begin() as connection:
        command.downgrade(migration_config(connection), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    engine = open_engine(url)
    assert {"studies", "trials", "trial_metrics"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_reopening_keeps_the_data_and_the_revision(url: str, study: str, query: Query) -> None:
    for _ in range(2):
        with Store.open(url) as store:
            assert store.get_study(study).name == study
    assert query("SELECT version_num FROM alembic_version") == [(_head(),)]
    assert query("SELECT count(*) FROM studies") == [(1,)]


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(sqlite_url: str, db_path: Path) -> None:
    engine = open_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    engine.dispose()
    with sqlite3.connect(db_path) as db:  # WAL is a property of the file, not only of our connections
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_missing_folder_is_not_created(tmp_path: Path) -> None:
    message = _storage_error(f"sqlite:///{tmp_path}/nowhere/a.db")
    assert message == (
        f"cannot open storage 'sqlite:///{tmp_path}/nowhere/a.db': "
        f"the folder {tmp_path}/nowhere does not exist; create it first"
    )
    assert not (tmp_path / "nowhere").exists()


def test_a_folder_is_not_a_database(tmp_path: Path) -> None:
    assert "is a folder, not a database file" in _storage_error(f"sqlite:///{tmp_path}")


def test_a_file_that_is_not_a_database_is_left_intact(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    garbage = b"these are my notes, not a database\n" * 200
    path.write_bytes(garbage)
    message = _storage_error(f"sqlite:///{path}")
    assert message == f"cannot open storage 'sqlite:///{path}': file is not a database"
    assert path.read_bytes() == garbage


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_a_read_only_database_opens_for_reading_and_refuses_writes(url: str, db_path: Path, study: str) -> None:
    read_only = f"sqlite:///file:{db_path}?mode=ro&uri=true"
    with Store.open(read_only) as store:
        assert store.get_study(study).name == study
        with pytest.raises(StorageError, match="attempt to write a readonly database") as caught:
            store.set_study_status(study, "failed")
    assert "\n" not in str(caught.value)
    with Store.open(url) as store:
        assert store.get_study(study).status == "running"


def test_a_read_only_empty_file_cannot_be_migrated(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    message = _storage_error(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert message.endswith("attempt to write a readonly database")


def test_a_newer_schema_asks_for_a_newer_archetype(url: str, query: Query) -> None:
    open_engine(url).dispose()
    query("UPDATE alembic_version SET version_num = '0042'")
    message = _storage_error(url)
    assert "schema revision '0042'" in message
    assert message.endswith("upgrade archetype")


def test_an_unreachable_postgresql_hides_the_password() -> None:
    message = _storage_error("postgresql+psycopg://u:secret@127.0.0.1:1/db")
    assert "secret" not in message
    assert message.startswith("cannot open storage 'postgresql+psycopg://u:***@127.0.0.1:1/db': ")
    assert "not installed" in message or "127.0.0.1" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url", "not a database URL"),
        ("nosuchdb://u:secret@host/db", "unknown database or driver 'nosuchdb'"),
        ("postgresql+nosuchdriver://u:secret@host/db", "unknown database or driver"),
    ],
)
def test_bad_urls_are_one_line_errors_without_the_password(url: str, reason: str) -> None:
    message = _storage_error(url)
    assert reason in message
    assert "secret" not in message


def test_storage_url_comes_from_the_argument_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ARCHETYPE_STORAGE", raising=False)
    assert resolve_url(None) == DEFAULT_STORAGE == "sqlite:///archetype.db"
    from_env = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("ARCHETYPE_STORAGE", from_env)
    assert resolve_url(None) == from_env
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"
    with Store.open() as store:
        assert store.url == from_env
    assert (tmp_path / "env.db").is_file()


def _study_row(name: str) -> Study:
    return Study(
        name=name, space="s", target="t", status="running", objectives=[], constraints=[], spec={},
        created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
    )


def test_session_scope_commits_on_success_and_rolls_back_on_error(url: str) -> None:
    engine = open_engine(url)
    with session_scope(engine) as session:
        session.add(_study_row("kept"))
    with pytest.raises(RuntimeError), session_scope(engine, write=True) as session:
        session.add(_study_row("dropped"))
        session.flush()
        raise RuntimeError("the block failed")
    with session_scope(engine) as session:
        assert session.scalars(select(Study.name)).all() == ["kept"]
    engine.dispose()


def test_a_first_revision_database_upgrades_with_its_data(url: str, study: str, query: Query) -> None:
    engine = open_engine(url)
    with engine.begin() as connection:
        command.downgrade(migration_config(connection), "0001")
    engine.dispose()
    assert query("SELECT version_num FROM alembic_version") == [("0001",)]
    with Store.open(url) as store:
        assert store.get_study(study).name == study and store.strategy_state(study) is None
        store.save_strategy_state(study, {"strategy": "random"})
    assert query("SELECT version_num FROM alembic_version") == [(_head(),)]
