"""A long import does not lock annotators out (issue 12, item 17), and is still all-or-nothing.

A real `python app.py import` subprocess writes a large file into a real SQLite file while this
process, another annotator, submits a label; a killed import leaves nothing anyone can see.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from annotation.services import labelling
from annotation.services.data import import_file
from annotation.services.projects import project_counts, project_names
from storage.db import open_database, transaction
from storage.models import PairwiseLabel, Project, Prompt, utcnow
from tests.conftest import PROJECT_ROOT
from tests.factories import make_items, make_project
from tests.test_cli import ENV

PAIRS = 30_000


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(PAIRS):
            f.write(json.dumps({"prompt": f"Question number {i}: what is {i} + {i}?",
                                "chosen": f"It is {2 * i}.", "rejected": f"It is {2 * i + 1}."}) + "\n")
    return path


def start_import(path: Path, db_path: Path, project: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "app.py", "import", str(path), "--db", str(db_path),
                             "--project", project, "--create"], cwd=PROJECT_ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_staged_rows(db, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until the import has written its first batch (rows exist in a staging project)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with db.engine.connect() as conn:  # a plain read: no write lock taken
            staged = conn.execute(select(func.count()).select_from(Prompt).join(Project)
                                  .where(Project.staging.is_(True))).scalar()
        if staged:
            return
        time.sleep(0.05)
    raise AssertionError("the import never started writing in batches")


def test_an_annotator_submits_within_seconds_while_a_large_import_runs(tmp_path, big_file):
    db_path = tmp_path / "shared.db"
    db = open_database(db_path)
    make_project(db, "work")
    make_items(db, "work", 1)
    proc = start_import(big_file, db_path, "big")
    try:
        wait_for_staged_rows(db, proc)
        view = labelling.next_item(db, "work", "ann")
        started = time.monotonic()
        receipt = labelling.submit_pairwise(db, view, "a")
        waited = time.monotonic() - started
        still_importing = proc.poll() is None
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert still_importing, "the import ended before the submit: make the file larger"
    assert waited < 3, f"the submit waited {waited:.1f} s for the import's write lock"
    counts = {c.name: c for c in project_counts(db)}
    assert counts["big"].pairwise_labels == PAIRS and counts["work"].pairwise_labels == 1
    with transaction(db) as s:
        assert s.get(PairwiseLabel, receipt.label_ids[0]).user.name == "ann"
    assert f"imported {PAIRS} records" in out


def test_a_killed_import_leaves_nothing_visible_and_is_cleaned_up_later(tmp_path, big_file):
    db_path = tmp_path / "shared.db"
    db = open_database(db_path)
    make_project(db, "work", prompts=3)
    before = [(c.name, c.prompts, c.pairwise_labels) for c in project_counts(db)]
    proc = start_import(big_file, db_path, "work")  # into an existing project
    try:
        wait_for_staged_rows(db, proc)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # midway, as a crash or a power cut would stop it
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert [(c.name, c.prompts, c.pairwise_labels) for c in project_counts(db)] == before
    assert project_names(db) == ["work"]
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Prompt).where(Prompt.project_id == s.scalar(
            select(Project.id).where(Project.name == "work")))) == 3
        # The dead import's rows are still on disk, hidden; once stale, the next import removes them.
        s.execute(update(Project).where(Project.staging.is_(True)).values(created_at=utcnow() - timedelta(days=1)))
    small = tmp_path / "small.jsonl"
    small.write_text('{"prompt": "one more"}\n', encoding="utf-8")
    import_file(db, small, "work")
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Project).where(Project.staging.is_(True))) == 0
        assert s.scalar(select(func.count()).select_from(Prompt)) == 4
