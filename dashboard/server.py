"""Serving the dashboard with uvicorn on a store that must already exist."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from archetype.errors import ArchetypeError
from archetype.store import SchemaOutdatedError, Store, resolve_url

LOOPBACK = "127.0.0.1"


def open_existing(url: str | None) -> Store:
    """The store at ``url``, opened without migrating; refuses a SQLite file that does not exist."""
    resolved = resolve_url(url)
    parsed = make_url(resolved)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            raise ArchetypeError(f"--storage: no database file {parsed.database!r}; run 'archetype search' first")
    return Store.open(resolved, migrate=False)


def serve(url: str | None, host: str = LOOPBACK, port: int = 8080, token: str | None = None) -> None:
    """Serve the dashboard of the store at ``url`` until interrupted."""
    import uvicorn

    from archetype.dashboard.app import create_app, create_outdated_app

    if not 0 < port < 65536:
        raise ArchetypeError(f"--port must be from 1 to 65535, got {port}")
    if token is not None and not token.strip():
        raise ArchetypeError("--token must not be empty")
    try:
        store = open_existing(url)
    except SchemaOutdatedError as exc:  # the dashboard never writes: it says how to upgrade instead
        print(f"archetype dashboard: {exc}", file=sys.stderr)
        uvicorn.run(create_outdated_app(str(exc), token), host=host, port=port, log_level="warning")
        return
    with store:
        app = create_app(store, token)
        if host != LOOPBACK and token is None:
            print(f"archetype dashboard: warning: serving on {host} without --token; anyone who reaches it can read "
                  "the store", file=sys.stderr)
        query = "?token=..." if token else ""
        print(f"archetype dashboard: serving {store.url} on http://{host}:{port}/{query} (Ctrl-C stops)",
              file=sys.stderr)
        gc.freeze()  # what was loaded to serve is kept for good: collections while a study is read skip it
        uvicorn.run(app, host=host, port=port, log_level="warning")
