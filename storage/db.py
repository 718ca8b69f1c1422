"""Engines, sessions and schema set-up.

`--db` everywhere takes either a file path (a SQLite file, created with its folder) or any SQLAlchemy
URL (``postgresql+psycopg://...`` for a team). SQLite runs in WAL mode with foreign keys on, and
every transaction that may write starts with ``BEGIN IMMEDIATE``: a writer takes the write lock up
front and waits instead of failing half-way with "database is locked" when annotators submit at
once: in the kernel's queue of ``storage.write_queue`` (woken the moment the writer before it
ends), and in SQLite's busy handler (busy_timeout) for writers outside ``transaction``. A
transaction that only reads (``reading``) starts with a plain ``BEGIN`` and takes no lock at all:
in WAL mode readers never wait for writers, nor writers for them.
On PostgreSQL, reads are ``READ ONLY`` transactions and leases lock rows with
``SELECT ... FOR UPDATE SKIP LOCKED`` (see annotation.services.labelling.next_item).

The service that handles one user action owns one transaction: use ``with transaction(db) as s:``,
or ``with reading(db) as s:`` when it only reads.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.write_queue import WriteQueue

log = logging.getLogger(__name__)

DEFAULT_DB_PATH = Path("data") / "prefstudio.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
READ_ONLY_OPTION = "prefstudio_read_only"  # execution option: this transaction only reads


def database_url(db: str | Path | None) -> str:
    """Turn a `--db` argument (path or URL) into an SQLAlchemy URL."""
    if db is None:
        db = DEFAULT_DB_PATH
    text = str(db)
    if "://" in text:
        make_url(text)  # raises a clear ArgumentError for a malformed URL
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY_OPTION) else "BEGIN IMMEDIATE")


def make_engine(db: str | Path | None) -> Engine:
    url = database_url(db)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


@dataclass
class Database:
    """An engine plus its session factory: the one handle the upper layers pass around."""

    engine: Engine
    sessions: sessionmaker[Session]
    #: SQLite: where write transactions wait for their turn (storage.write_queue); None elsewhere.
    writers: WriteQueue | None = None

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it on an empty database)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-plugin INFO lines drown the app's
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn:
        # SQLite batch migrations rebuild a table (copy, DROP, rename); with foreign keys on, the DROP
        # would first run every referencing row's ON DELETE action (labels would lose their user,
        # skips would vanish). SQLite's documented procedure: keys off outside the transaction (a
        # PRAGMA inside one is ignored), migrate, check the keys still hold, keys back on.
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _foreign_keys(conn, on=False)
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the migration broke a foreign key; nothing was changed")
        finally:
            if sqlite:
                _foreign_keys(conn, on=True)


def _foreign_keys(conn, on: bool) -> None:
    # Straight on the DBAPI connection (autocommit): through SQLAlchemy it would open a transaction.
    conn.connection.dbapi_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def open_database(db: str | Path | None = None, migrate: bool = True) -> Database:
    """Open (and by default migrate) the database named by a path or URL."""
    engine = make_engine(db)
    if migrate:
        upgrade_schema(engine)
    writers = WriteQueue.for_file(engine.url.database) if engine.url.get_backend_name() == "sqlite" else None
    return Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), writers=writers)


@contextmanager
def transaction(db: Database) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back everything on any exception.

    On SQLite it first waits for its turn among the writers (:class:`WriteQueue`), until after the
    commit or rollback."""
    with db.writers.turn() if db.writers else nullcontext(), db.sessions() as session, session.begin():
        yield session


@contextmanager
def reading(db: Database) -> Iterator[Session]:
    """A transaction that only reads: no write lock on SQLite, READ ONLY on PostgreSQL.

    Nothing is committed; a write inside it fails on PostgreSQL and is rolled back on SQLite.
    """
    with db.sessions() as session:
        session.connection(execution_options={READ_ONLY_OPTION: True, "postgresql_readonly": True})
        try:
            yield session
        finally:
            session.rollback()
