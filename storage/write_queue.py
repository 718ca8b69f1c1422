"""SQLite writers of every process wait in the kernel's queue, not in SQLite's sleep-and-retry loop.

SQLite lets one transaction write at a time. A writer that finds the lock taken is handled by
SQLite's busy handler, which polls: it sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100
ms at a time between retries, and nothing orders the waiters. Under load a waiter that has backed
off to 100 ms naps keeps losing the lock to writers that just arrived, and a label submission that
needs the lock for a few milliseconds waits seconds for it (measured: 16 annotator processes on
two busy cores, p99 4.5 s, 88 % of it in ``BEGIN IMMEDIATE``; see docs/benchmarks.md).

:class:`WriteQueue` takes an exclusive ``flock`` on a file beside the database (``<db>-writers``)
before a write transaction begins and drops it after the commit or rollback. A process that finds
it taken blocks in the kernel and is woken the moment it is released, so SQLite's lock is always
free when a transaction asks for it. Threads of one process queue on a lock of their own first
(an ``flock`` is held by the open file, which the threads share). A process that dies releases its
``flock`` with its files. Writers that do not go through :func:`storage.db.transaction` (schema
migrations) still meet SQLite's own lock and busy timeout, as before. ``PREFSTUDIO_SQLITE_WRITE_QUEUE=0``
turns the queue off (e.g. a database on a network file system whose flock cannot be trusted; and
bench/storage.py, to measure what it changes).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; SQLite's busy handler alone orders the writers there
    fcntl = None  # type: ignore[assignment]


SWITCH = "PREFSTUDIO_SQLITE_WRITE_QUEUE"
_QUEUES: dict[str, WriteQueue] = {}
_QUEUES_LOCK = threading.Lock()


class WriteQueue:
    """One writer at a time across the processes and threads that open ``database`` (a SQLite file)."""

    def __init__(self, database: Path):
        self.path = Path(f"{database}-writers")
        self._threads = threading.RLock()
        self._local = threading.local()  # this thread's depth of nested transactions
        self._fd: int | None = None
        self._pid: int | None = None

    @classmethod
    def for_file(cls, database: str | None) -> WriteQueue | None:
        """The queue of a SQLite file, one per file in a process, so that every handle on the file
        shares it (None for an in-memory database, or where flock is missing)."""
        if fcntl is None or not database or database == ":memory:" or os.environ.get(SWITCH) == "0":
            return None
        path = str(Path(database).resolve())
        with _QUEUES_LOCK:
            return _QUEUES.setdefault(path, cls(Path(path)))

    def _file(self) -> int:
        if self._pid != os.getpid():  # a forked child must not share its parent's open file (and lock)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this writer's turn; hold it for the block (a nested block shares the outer turn)."""
        with self._threads:
            depth = getattr(self._local, "depth", 0)
            if depth == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
                if depth == 0:
                    fcntl.flock(self._file(), fcntl.LOCK_UN)
