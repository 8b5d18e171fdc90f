"""Opening the store's database: URL resolution, SQLite settings, migrations to head, and sessions."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from archetype.errors import StorageError

DEFAULT_STORAGE = "sqlite:///archetype.db"
STORAGE_ENV = "ARCHETYPE_STORAGE"
MIGRATIONS = Path(__file__).with_name("migrations")
WRITE_OPTION = "archetype_write"  # execution option: on SQLite, BEGIN IMMEDIATE takes the write lock up front
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_POSTGRES_CONNECT_TIMEOUT_S = 5
_MIGRATION_LOCK_ID = 0x41524348  # PostgreSQL advisory lock that serializes concurrent first opens


class SchemaOutdatedError(StorageError):
    """The store's schema is older than this archetype's and was opened without migrating it."""


UPGRADE_COMMAND = "archetype db upgrade"


def resolve_url(url: str | None) -> str:
    """The storage URL to use: ``url`` if given, else ``$ARCHETYPE_STORAGE``, else ``DEFAULT_STORAGE``."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit to print."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def describe_failure(exc: BaseException, url: str | None = None) -> str:
    """The database driver's own reason for ``exc`` on one line, without the password of ``url``."""
    reason = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    text = "; ".join(line for line in lines if not line.startswith("(Background on this error"))
    text = text or type(reason).__name__
    password = _password_of(url) if url else None
    return text.replace(password, "***") if password else text


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine on ``url`` whose schema is migrated to the newest revision; StorageError if it cannot be.

    Without ``migrate`` nothing is written: a schema older than the newest raises SchemaOutdatedError.
    """
    shown = masked_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"cannot open storage {shown!r}: not a database URL such as {DEFAULT_STORAGE!r}") from exc
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        _check_sqlite_path(parsed, shown)
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        options = {"connect_args": {"connect_timeout": _POSTGRES_CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    try:
        engine = create_engine(parsed, **options)
    except NoSuchModuleError as exc:
        raise StorageError(f"cannot open storage {shown!r}: unknown database or driver {parsed.drivername!r}") from exc
    except ImportError as exc:
        raise StorageError(
            f"cannot open storage {shown!r}: its database driver is not installed (no module named {exc.name!r})"
        ) from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot open storage {shown!r}: {describe_failure(exc, url)}") from exc
    if is_sqlite:
        _configure_sqlite(engine, writer=migrate)
    try:
        _migrate_to_head(engine, shown) if migrate else _check_at_head(engine, shown)
    except (SQLAlchemyError, CommandError) as exc:
        engine.dispose()
        raise StorageError(f"cannot open storage {shown!r}: {describe_failure(exc, url)}") from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def session_scope(engine: Engine, *, write: bool = False) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises; ``write`` takes SQLite's lock first."""
    bind = engine.execution_options(**{WRITE_OPTION: True}) if write else engine
    session = Session(bind, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def migration_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the store, migrating ``connection`` when one is given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _known_revisions() -> tuple[str, frozenset[str]]:
    scripts = ScriptDirectory.from_config(migration_config())
    head = scripts.get_current_head()
    assert head is not None, f"no Alembic revisions in {MIGRATIONS}"
    return head, frozenset(script.revision for script in scripts.walk_revisions())


def head_revision() -> str:
    """The newest schema revision this archetype knows."""
    return _known_revisions()[0]


def _check_at_head(engine: Engine, shown: str) -> None:
    head, _ = _known_revisions()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    _refuse_newer_schema(current, shown)
    if current != head:
        raise SchemaOutdatedError(
            f"storage {shown!r} has schema revision {current or 'none'}, this archetype reads {head}; "
            f"upgrade it with '{UPGRADE_COMMAND} --storage URL' (back it up first)"
        )


def _migrate_to_head(engine: Engine, shown: str) -> None:
    head, _ = _known_revisions()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    _refuse_newer_schema(current, shown)
    if current == head:
        return
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
        current = MigrationContext.configure(connection).get_current_revision()  # another process may have won
        _refuse_newer_schema(current, shown)
        if current != head:
            command.upgrade(migration_config(connection), "head")


def _refuse_newer_schema(revision: str | None, shown: str) -> None:
    head, known = _known_revisions()
    if revision is not None and revision not in known:
        raise StorageError(
            f"cannot open storage {shown!r}: it was written by a newer archetype (schema revision {revision!r}, "
            f"this one knows up to {head!r}); upgrade archetype"
        )


def _check_sqlite_path(url: URL, shown: str) -> None:
    database = url.database or ""
    if url.query.get("uri") in ("true", "1"):
        database = database.removeprefix("file:")
    if not database or database.startswith(":memory:") or url.query.get("mode") == "memory":
        return
    path = Path(database)
    if path.is_dir():
        raise StorageError(f"cannot open storage {shown!r}: {path} is a folder, not a database file")
    if not path.parent.is_dir():
        raise StorageError(f"cannot open storage {shown!r}: the folder {path.parent} does not exist; create it first")


def _configure_sqlite(engine: Engine, *, writer: bool = True) -> None:
    """SQLite's settings on every connection; a reader leaves the journal mode (a file header field) as it is."""
    @event.listens_for(engine, "connect")
    def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if writer:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: no corruption, no fsync on every commit
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _password_of(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        match = re.search(r"://[^:/@]*:([^@]*)@", url)
        return match.group(1) if match else None
