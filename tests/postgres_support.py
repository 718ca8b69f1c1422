"""A throwaway PostgreSQL server for the test session, and a fresh database per test on it.

Debian's `postgresql` package (installed by `bash .ci/setup --test`) provides `initdb` and
`pg_ctl`. Both refuse to run as root, so as root they run as the `postgres` user on a folder it
owns. The server listens on a Unix socket inside that folder only (no TCP port at all), with
durability switched off (fsync, synchronous_commit): a test database never has to survive a crash.

Each test gets its own database, cloned from a template that already holds the migrated schema
(CREATE DATABASE ... TEMPLATE copies it in milliseconds), and dropped afterwards.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "prefstudio"
TEMPLATE_DB = "prefstudio_template"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (bash .ci/setup --test installs it)"
    if not (_binary("initdb") and _binary("pg_ctl")):
        return "PostgreSQL's initdb/pg_ctl are not installed (bash .ci/setup --test installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run initdb/pg_ctl as"
    return None


class PostgresServer:
    """initdb + pg_ctl start in a temporary folder; `stop()` removes everything."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="prefstudio-pg-"))
        self.data = self.folder / "data"
        self.port = 5432  # only names the socket file (.s.PGSQL.5432): the server listens on no TCP port
        self._names = itertools.count()
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        self._run(_binary("initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        options = (f"-k {self.folder} -c listen_addresses='' -p {self.port} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")
        try:
            self._create_template()
        except BaseException:
            self.stop()  # a failed migration must not leave the server running behind the session
            raise

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._prefix, *command], capture_output=True, text=True)
        if result.returncode != 0:
            log = self.folder / "server.log"
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                               f"{log.read_text() if log.exists() else ''}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.folder}&port={self.port}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.folder), port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def _create_template(self) -> None:
        from storage.db import open_database

        self._admin(f"CREATE DATABASE {TEMPLATE_DB}")
        db = open_database(self.url(TEMPLATE_DB))
        db.engine.dispose()  # a template must have no open connections to be cloned

    def new_database(self, migrated: bool = True) -> str:
        """A fresh database (with the current schema unless `migrated` is False); returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB if migrated else 'template0'}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.split("@/", 1)[1].split("?", 1)[0]
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
