"""Schema, migrations and the database settings the rest of the app relies on, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from storage.db import database_url, open_database, reading, transaction
from storage.errors import InputError
from storage.models import Base, Choice, PairwiseLabel, Project
from storage.prompts import content_hash, validate_messages
from tests.factories import make_items, make_project

pytestmark = pytest.mark.databases


def test_migrations_build_exactly_the_models_schema(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert "alembic_version" in inspect(db.engine).get_table_names()


def test_migrating_an_empty_database_twice_is_a_no_op(new_db_url):
    url = new_db_url("twice", migrated=False)
    open_database(url).engine.dispose()
    db = open_database(url)
    with db.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == "0006"
    db.engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    db = open_database(tmp_path / "wal.db")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(db):
    with pytest.raises(IntegrityError):
        with transaction(db) as s:
            s.add(PairwiseLabel(prompt_id=999, response_a_id=1, response_b_id=2, choice=Choice.a))


def test_db_argument_takes_a_path_or_a_url(tmp_path):
    assert database_url(tmp_path / "x" / "a.db") == f"sqlite:///{tmp_path / 'x' / 'a.db'}"
    assert (tmp_path / "x").is_dir()
    assert database_url("sqlite:////tmp/y.db") == "sqlite:////tmp/y.db"
    db = open_database(f"sqlite:///{tmp_path / 'url.db'}")
    assert (tmp_path / "url.db").exists()
    assert db.url.startswith("sqlite:///")


def test_a_failed_transaction_leaves_nothing_behind(db):
    make_project(db, "p")
    with pytest.raises(RuntimeError):
        with transaction(db) as s:
            s.add(Project(name="half-made"))
            s.flush()
            raise RuntimeError("boom")
    with transaction(db) as s:
        assert s.query(Project).filter_by(name="half-made").count() == 0


def test_one_label_per_item_and_annotator_is_enforced_by_the_schema(db):
    make_project(db, "p")
    (item_id,) = make_items(db, "p", 1)
    from storage.models import Item, User

    with transaction(db) as s:
        user = User(name="ann")
        s.add(user)
        item = s.get(Item, item_id)
        a, b = item.responses
        s.add(PairwiseLabel(prompt_id=item.prompt_id, item_id=item.id, user=user, response_a_id=a.id,
                            response_b_id=b.id, choice=Choice.a))
    with pytest.raises(IntegrityError):
        with transaction(db) as s:
            user = s.query(User).filter_by(name="ann").one()
            s.add(PairwiseLabel(prompt_id=item.prompt_id, item_id=item_id, user_id=user.id, response_a_id=a.id,
                                response_b_id=b.id, choice=Choice.b))


def test_prompt_validation_and_hash():
    msgs = validate_messages([{"role": "user", "content": "hi", "extra": 1}])
    assert msgs == [{"role": "user", "content": "hi"}]
    assert content_hash(msgs) == content_hash([{"content": "hi", "role": "user"}])
    for bad, reason in [([], "at least one"), ([{"role": "bot", "content": "x"}], "unknown role"),
                        ([{"role": "user", "content": "  "}], "empty"),
                        ([{"role": "user", "content": "x" * 11}], "limit"),
                        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "end with a user")]:
        with pytest.raises(InputError, match=reason):
            validate_messages(bad, max_chars=10)


def test_reads_neither_wait_for_a_writer_nor_keep_anything(db, db_backend):
    make_project(db, "p")
    with transaction(db) as writer:  # holds SQLite's write lock (BEGIN IMMEDIATE) until it commits
        writer.add(Project(name="uncommitted"))
        writer.flush()
        with reading(db) as reader:  # another connection: a plain BEGIN, so it does not queue behind
            assert reader.scalars(select(Project.name)).all() == ["p"]
    refused = False
    try:
        with reading(db) as reader:
            reader.add(Project(name="written while reading"))
            reader.flush()
    except DBAPIError:
        refused = True  # PostgreSQL: a READ ONLY transaction refuses the write
    assert refused == (db_backend == "postgresql")
    with transaction(db) as s:  # the pooled connection is writable again
        s.add(Project(name="after"))
    with reading(db) as s:
        assert sorted(s.scalars(select(Project.name))) == ["after", "p", "uncommitted"]
        assert s.scalar(select(func.count()).select_from(Project)) == 3
