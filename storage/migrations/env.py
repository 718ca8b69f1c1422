"""Alembic environment: runs migrations on the connection handed over by storage.db.upgrade_schema,
or on `sqlalchemy.url` when Alembic is driven from its own command line."""
from alembic import context
from sqlalchemy import engine_from_config, pool

from storage.models import Base

target_metadata = Base.metadata
config = context.config


def run_on(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things, batch mode rebuilds tables instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.begin() as conn:
        run_on(conn)
