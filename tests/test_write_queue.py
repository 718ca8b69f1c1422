"""SQLite's writers queued in the kernel (storage/write_queue.py), with real processes on a real file."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import open_database, transaction
from storage.models import Project
from storage.write_queue import SWITCH, WriteQueue
from tests.factories import make_project

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from storage.db import open_database, transaction
from tests.factories import make_project
db = open_database(sys.argv[1], migrate=False)
with transaction(db) as s:
    Path(sys.argv[2]).touch()  # it holds its turn now
    time.sleep(1.5)
    make_project(db, "from-the-holder")  # a nested transaction: it writes within the holder's turn
"""


def writers_file_taken(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_writer_waits_its_turn_behind_another_process_and_then_sees_its_commit(tmp_path):
    db = open_database(tmp_path / "q.db")
    held = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "q.db"), str(held)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not held.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "the holder never took its turn"
            time.sleep(0.02)
        # The other process holds the queue's lock, not only SQLite's: a writer here blocks in the kernel.
        assert writers_file_taken(tmp_path / "q.db-writers")
        started = time.monotonic()
        with transaction(db) as s:
            waited = time.monotonic() - started
            names = s.scalars(select(Project.name)).all()
        assert waited > 0.5, "entered while the other process held its turn"
        assert names == ["from-the-holder"]  # its turn ended with its commit, before ours began
        assert holder.wait(60) == 0
    finally:
        holder.kill()
    make_project(db, "mine")  # writing goes on as usual once the holder is gone
    assert not writers_file_taken(tmp_path / "q.db-writers")


def test_one_queue_per_file_nested_turns_and_the_switch(tmp_path, monkeypatch):
    first = open_database(tmp_path / "a.db")
    second = open_database(tmp_path / "a.db", migrate=False)
    assert first.writers is second.writers  # both handles on the file share one queue in a process
    with first.writers.turn(), first.writers.turn():  # nested in one thread: the outer turn is shared
        assert writers_file_taken(tmp_path / "a.db-writers")
    assert not writers_file_taken(tmp_path / "a.db-writers")
    monkeypatch.setenv(SWITCH, "0")
    assert WriteQueue.for_file(str(tmp_path / "b.db")) is None
    assert open_database(tmp_path / "b.db").writers is None
    assert WriteQueue.for_file(":memory:") is None


@pytest.mark.databases
def test_postgresql_has_no_file_queue(db, db_backend):
    assert (db.writers is None) == (db_backend == "postgresql")
