"""Moving a whole database between engines: SQLite to PostgreSQL when a team outgrows one machine,
or back (`app.py db copy --from URL --to URL`).

Every table of the schema is copied row by row with its ids, in dependency order (parents before
children), in ONE transaction on the target: a failure half-way leaves the target as empty as it
was. The source is read in one snapshot (REPEATABLE READ on PostgreSQL, one read transaction on
SQLite) so rows written meanwhile cannot leave a label without its item. A target that already
holds rows is refused: merging two databases would renumber ids, which is another tool's job.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Connection, DateTime, Table, func, insert, select, text

from storage.db import READ_ONLY_OPTION, Database, open_database
from storage.errors import InputError
from storage.models import Base

BATCH_ROWS = 1000


@dataclass
class CopyResult:
    source: str
    target: str
    source_rows: dict[str, int] = field(default_factory=dict)  # table -> rows, in copy order
    target_rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        width = max(len(name) for name in self.source_rows)
        lines = [f"copied {self.source} -> {self.target}", f"{'table':<{width}}  {'from':>9}  {'to':>9}"]
        for name, count in self.source_rows.items():
            lines.append(f"{name:<{width}}  {count:>9}  {self.target_rows.get(name, 0):>9}")
        lines.append(f"{'total':<{width}}  {sum(self.source_rows.values()):>9}  {sum(self.target_rows.values()):>9}")
        return "\n".join(lines)


def row_counts(conn: Connection) -> dict[str, int]:
    return {t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in Base.metadata.sorted_tables}


def copy_database(source_url: str, target_url: str, batch_rows: int = BATCH_ROWS) -> CopyResult:
    """Copy every row of `source_url` into the empty database `target_url` (created and migrated if new)."""
    source, target = open_database(source_url), open_database(target_url)
    try:
        if source.engine.url == target.engine.url:
            raise InputError("--from and --to name the same database")
        result = CopyResult(source=source.url, target=target.url)
        with _snapshot(source) as read, target.engine.begin() as write:
            present = {name: n for name, n in row_counts(write).items() if n}
            if present:
                listed = ", ".join(f"{name}: {n}" for name, n in present.items())
                raise InputError(f"the target database is not empty ({listed}); copy into a new, empty database")
            for table in Base.metadata.sorted_tables:
                result.source_rows[table.name] = _copy_table(table, read, write, batch_rows)
            _advance_id_sequences(write)
            result.target_rows = row_counts(write)
            if result.target_rows != result.source_rows:  # not committed: the target stays empty
                raise RuntimeError(f"copied row counts differ from the source: {result.target_rows}")
        return result
    finally:
        source.engine.dispose()
        target.engine.dispose()


@contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """A connection that reads the source as of one moment, and writes nothing."""
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            conn.execution_options(**{READ_ONLY_OPTION: True})  # a plain BEGIN: no write lock
        with conn.begin() as transaction:
            yield conn
            transaction.rollback()


def _copy_table(table: Table, read: Connection, write: Connection, batch_rows: int) -> int:
    copied = 0
    for rows in _batches(read, table, batch_rows):
        write.execute(insert(table), rows)
        copied += len(rows)
    return copied


def _batches(read: Connection, table: Table, size: int) -> Iterator[list[dict]]:
    zoned = [c.name for c in table.columns if isinstance(c.type, DateTime) and c.type.timezone]
    result = read.execution_options(yield_per=size).execute(select(table).order_by(*table.primary_key.columns))
    for partition in result.mappings().partitions():
        rows = [dict(row) for row in partition]
        for row in rows:
            for name in zoned:
                row[name] = _utc(row[name])
        yield rows


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back the UTC times the app stored without their zone; PostgreSQL hands them back
    in the session's zone. Both become aware UTC, which each engine stores as the same instant."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _advance_id_sequences(write: Connection) -> None:
    """Rows came with their ids; PostgreSQL's id sequences must start past them, or the next insert collides."""
    if write.dialect.name != "postgresql":
        return  # SQLite takes max(rowid) + 1
    for table in Base.metadata.sorted_tables:
        write.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                           f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"))
