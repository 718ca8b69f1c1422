"""`app.py db copy`: a populated SQLite database copied to a real PostgreSQL server and back.

Every table round-trips row for row (ids, JSON, enums, times as the same instants), the exports
in every format are byte-identical, the copy prints both sides' counts, a non-empty target is
refused and left as it was, and the copied PostgreSQL database takes new rows after the copy.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from annotation.auth.accounts import add_user
from annotation.auth.sessions import log_in
from annotation.services import labelling as L
from annotation.services.data import export_labels
from storage.copying import row_counts
from storage.db import open_database, transaction
from storage.exporting import EXPORT_FORMATS
from storage.models import (Base, Evaluation, Item, Job, JobStatus, JudgeVerdict, Choice, Project, Snapshot,
                            TrainedModel)
from storage.snapshots import create_snapshot
from tests.factories import make_items, make_project
from tests.test_cli import app


def populate(db, tmp_path) -> None:
    """Every table gets rows: three label modes, skips, a rewrite, a job with its snapshot,
    trained model and evaluation, a judge verdict, an account with a membership and a session."""
    rng = random.Random(0)
    make_project(db, "pairs")
    make_items(db, "pairs", 6)
    for n, choice in enumerate(["a", "b", "tie", "both_bad"]):
        view = L.next_item(db, "pairs", f"ann-{n % 2}", rng=rng)
        L.submit_pairwise(db, view, choice, strength=2 if choice in "ab" else None,
                          rewrite="A better answer. é 漢字" if choice == "both_bad" else None)
    L.skip(db, L.next_item(db, "pairs", "ann-0", rng=rng))
    make_project(db, "lists", mode="listwise", k=3)
    make_items(db, "lists", 3)
    view = L.next_item(db, "lists", "ann-0", rng=rng)
    ids = [r.id for r in view.responses]
    L.submit_ranking(db, view, [[ids[1]], [ids[0], ids[2]]])  # a tie in second place
    make_project(db, "rates", mode="pointwise", k=2)
    make_items(db, "rates", 2)
    view = L.next_item(db, "rates", "ann-1", rng=rng)
    L.submit_ratings(db, view, [5, 2])
    add_user(db, "lead", "reviewer", "a good password", projects=("pairs",))
    assert log_in(db, "lead", "a good password")
    with transaction(db) as s:
        project = s.scalar(select(Project).where(Project.name == "pairs"))
        snapshot = create_snapshot(s, project, "pairs", tmp_path / "snapshot")
        started = datetime(2026, 12, 1, 23, 30, tzinfo=timezone.utc)
        job = Job(kind="dpo", status=JobStatus.succeeded, config={"beta": 0.1, "nested": {"lr": 1e-4}},
                  run_dir=str(tmp_path / "run"), project_id=project.id, snapshot=snapshot, started_at=started,
                  finished_at=started + timedelta(minutes=5))
        s.add(job)
        s.flush()
        model = TrainedModel(name="dpo-1", kind="policy-adapter", path=str(tmp_path / "run" / "adapter"),
                             base_model="default", job_id=job.id, snapshot_id=snapshot.id,
                             metrics={"eval/rewards/accuracies": 0.75})
        s.add(model)
        s.flush()
        s.add(Evaluation(project_id=project.id, model_id=model.id, base_model="default", metrics={"win_rate": 0.6}))
        s.add(JudgeVerdict(item_id=s.scalars(select(Item.id)).first(), judge_model="default", choice=Choice.a,
                           prob_a=0.8, raw="A", judge_prompt="Which is better?"))


def dump(url: str) -> dict[str, list[dict]]:
    """Every row of every table, ordered by id, with times as UTC instants."""
    db = open_database(url)
    try:
        with db.engine.connect() as conn:
            out = {}
            for table in Base.metadata.sorted_tables:
                rows = [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]
                for row in rows:
                    for key, value in row.items():
                        if isinstance(value, datetime):
                            row[key] = (value.replace(tzinfo=timezone.utc) if value.tzinfo is None
                                        else value.astimezone(timezone.utc))
                out[table.name] = rows
            return out
    finally:
        db.engine.dispose()


def exports(url: str, out_dir) -> dict[str, bytes]:
    db = open_database(url)
    files = {}
    try:
        for project, formats in [("pairs", ["trl", "trl-chat", "sft"]), ("lists", ["listwise", "pairs-from-rankings"]),
                                 ("rates", ["ratings"])]:
            for fmt in formats:
                path = out_dir / f"{project}-{fmt}.jsonl"
                export_labels(db, project, fmt, path)
                files[path.name] = path.read_bytes()
    finally:
        db.engine.dispose()
    assert set(fmt for name in files for fmt in EXPORT_FORMATS if name.endswith(f"-{fmt}.jsonl")) == set(EXPORT_FORMATS)
    return files


def test_sqlite_to_postgresql_and_back_gives_identical_rows_and_exports(db, tmp_path, postgres_server):
    populate(db, tmp_path)
    source = db.engine.url.render_as_string(hide_password=False)
    db.engine.dispose()
    pg_url = postgres_server.new_database(migrated=False)  # the copy migrates it
    back = tmp_path / "back.db"
    try:
        there = app("db", "copy", "--from", source, "--to", pg_url)
        assert there.returncode == 0, there.stderr
        assert there.stdout.splitlines()[1].split() == ["table", "from", "to"]
        counts = {line.split()[0]: line.split()[1:] for line in there.stdout.splitlines()[2:]}
        assert all(int(a) > 0 and a == b for a, b in counts.values()), there.stdout  # every table has rows
        assert set(counts) == {t.name for t in Base.metadata.sorted_tables} | {"total"}

        again = app("db", "copy", "--from", pg_url, "--to", back)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[2:] == there.stdout.splitlines()[2:]

        original = dump(source)
        assert dump(pg_url) == original and dump(str(back)) == original
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
        assert exports(source, tmp_path / "a") == exports(pg_url, tmp_path / "b") == exports(str(back), tmp_path / "c")

        # The copy on PostgreSQL takes new rows: its id sequences start past the copied ids.
        copied = open_database(pg_url)
        make_items(copied, "pairs", 2)
        L.submit_pairwise(copied, L.next_item(copied, "pairs", "ann-new"), "a")
        copied.engine.dispose()
    finally:
        postgres_server.drop_database(pg_url)


def test_a_target_that_is_not_empty_is_refused_and_left_as_it_was(db, tmp_path):
    make_project(db, "p")
    make_items(db, "p", 2)
    target = tmp_path / "taken.db"
    taken = open_database(target)
    make_project(taken, "already-here")
    with taken.engine.connect() as conn:
        before = row_counts(conn)
    taken.engine.dispose()
    result = app("db", "copy", "--from", db.engine.url.render_as_string(False), "--to", target)
    assert result.returncode == 2
    assert "the target database is not empty (projects: 1)" in result.stderr
    after = open_database(target)
    with after.engine.connect() as conn:
        assert row_counts(conn) == before
    after.engine.dispose()
    same = app("db", "copy", "--from", target, "--to", target)
    assert same.returncode == 2 and "same database" in same.stderr
