"""Alembic environment: migrates the connection that ``archetype.store.engine`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from archetype.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    """Apply the pending revisions on ``connection``, in batch mode so that SQLite can alter tables."""
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:  # the alembic command line, given -x or sqlalchemy.url by hand
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection in config.attributes['connection'] and no sqlalchemy.url to open")
    with create_engine(url, poolclass=NullPool).begin() as opened:
        run_migrations(opened)
