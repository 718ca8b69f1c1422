"""What every tab needs: the database and the background generator (a small engine object that
wires the tabs, instead of module globals)."""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import Protocol

from annotation.generation import WorkerStatus
from annotation.jobs.runner import JobRunner
from annotation.services.data import UploadLimits
from annotation.services.labelling import DEFAULT_MIN_DWELL_MS
from storage.db import Database


class Worker(Protocol):
    """The background generator as the UI sees it: a thread in tests, a process in `serve`."""

    @property
    def status(self) -> WorkerStatus: ...

    def wake(self) -> None: ...


@dataclass
class UIContext:
    db: Database
    default_model: str = "default"
    worker: Worker | None = None
    jobs: JobRunner | None = None
    limits: UploadLimits = field(default_factory=UploadLimits)  # what a web upload may hold
    min_label_ms: int = DEFAULT_MIN_DWELL_MS  # the least time an item is on screen before its label

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def worker_summary(self, project: str) -> str:
        """A short note on the generator for the progress line (empty when there is nothing to say)."""
        if self.worker is None:
            return " · generator off"
        status = self.worker.status
        if project in status.errors:
            return f" · ⚠️ generator error: {status.errors[project]}"
        if status.state == "stopped":
            return f" · ⚠️ {status.message}"
        if status.state == "loading model":
            return f" · {status.message}…"
        if status.state == "generating" and status.project == project:
            return " · generating…"
        return ""
