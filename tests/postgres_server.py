"""A throwaway PostgreSQL server for tests and benches: initdb in a temp folder, a free port, removed on stop.

The server binaries come from the distribution's packages (Debian: ``apt-get install postgresql``,
which ``make setup`` runs). PostgreSQL refuses to run as root, so as root the server runs as the
``postgres`` user that the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SUPERUSER = "archetype"
SHARED_DATABASE = "archetype_tests"
SERVER_SETTINGS = {  # a disposable server: durability traded for speed
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "listen_addresses": "127.0.0.1",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or no user to run them as."""


class PostgresStartError(RuntimeError):
    """The server binaries are there but the server did not start."""


def find_server_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$ARCHETYPE_PG_BIN``, Debian's newest, or the PATH."""
    candidates = []
    if os.environ.get("ARCHETYPE_PG_BIN"):
        candidates.append(Path(os.environ["ARCHETYPE_PG_BIN"]))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    candidates.extend(debian)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on the PATH; "
        "install the 'postgresql' package (make setup does as root) or set ARCHETYPE_PG_BIN"
    )


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1 with trust authentication, for one test session or bench."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_server_binaries()
        self.port = 0
        self._root: Path | None = None
        self._run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server as") \
                    from None
            self._run_as = "postgres"

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; PostgresStartError if it does not start."""
        self._root = Path(tempfile.mkdtemp(prefix="arc-pg-"))
        data = self._root / "data"
        if self._run_as is not None:
            shutil.chown(self._root, user=self._run_as)
        self._pg("initdb", "--pgdata", str(data), "--username", SUPERUSER, "--auth", "trust",
                 "--encoding", "UTF8", "--locale", "C", "--no-sync")
        for _ in range(5):  # a free port may be taken between finding and binding it
            self.port = _free_port()
            options = " ".join(f"-c {key}={value}" for key, value in {
                **SERVER_SETTINGS, "port": str(self.port), "unix_socket_directories": str(self._root),
            }.items())
            started = self._pg("pg_ctl", "start", "--pgdata", str(data), "--wait", "--timeout", "60",
                               "--log", str(self._root / "server.log"), "--options", options, check=False)
            if started.returncode == 0:
                self._sql(f"CREATE DATABASE {SHARED_DATABASE}")
                return self
        log = (self._root / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise PostgresStartError(f"the PostgreSQL server did not start: {log}")

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_schema(self, prefix: str = "t") -> str:
        """The URL of a new empty schema, the only one on its connections' search path, in a shared database.

        Much quicker than a new database: tests take one each.
        """
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE SCHEMA "{name}"', database=SHARED_DATABASE)
        return f"{self.url(SHARED_DATABASE)}?options=-csearch_path%3D{name}"

    def drop_schema(self, url: str) -> None:
        """Drop the schema of a ``create_schema`` URL with everything in it."""
        name = url.rsplit("%3D", 1)[1]
        self._sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE', database=SHARED_DATABASE)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, closing whatever connections are left on it."""
        name = url.rsplit("/", 1)[1]
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server at once and remove its files."""
        if self._root is None:
            return
        if (self._root / "data" / "postmaster.pid").exists():
            self._pg("pg_ctl", "stop", "--pgdata", str(self._root / "data"), "--mode", "immediate", "--wait",
                     check=False)
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}",
                             autocommit=True) as connection:
            connection.execute(statement)

    def _pg(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self._root)
        if check and done.returncode != 0:
            raise PostgresStartError(f"{program} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
        return done


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())
