"""`app.py serve`: open the database, seed a fresh one, start the generator, serve the UI."""
from __future__ import annotations

import logging
from pathlib import Path

from annotation.generator_process import GeneratorProcess
from annotation.jobs.runner import JobRunner
from annotation.services.data import UploadLimits
from annotation.services.prompts import seed_starter_project
from annotation.ui.app import build_app, launch_kwargs
from annotation.ui.context import UIContext
from storage.db import open_database

log = logging.getLogger(__name__)


def default_runs_root(database) -> Path:
    """Run folders live next to a SQLite file (data/runs for data/prefstudio.db), else in ./runs."""
    url = database.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).resolve().parent / "runs"
    return Path("runs").resolve()


def create_context(db: str | None, model: str = "default", worker: bool = True, seed: bool = True,
                   runs: str | None = None, jobs: bool = True) -> UIContext:
    database = open_database(db)
    if seed and seed_starter_project(database, model=model):
        log.info("new database: created the 'starter' project with the starter prompts")
    ctx = UIContext(db=database, default_model=model)
    if jobs:
        ctx.jobs = JobRunner(database, Path(runs) if runs else default_runs_root(database)).start()
    if worker:
        ctx.worker = GeneratorProcess(database.engine.url.render_as_string(hide_password=False))
        ctx.worker.start()
    return ctx


def serve(db: str | None = None, model: str = "default", host: str = "127.0.0.1", port: int = 7860,
          worker: bool = True, seed: bool = True, runs: str | None = None, max_upload_mb: float | None = None,
          max_unzipped_mb: float | None = None, min_label_seconds: float | None = None) -> None:
    ctx = create_context(db, model=model, worker=worker, seed=seed, runs=runs)
    ctx.limits = UploadLimits.from_megabytes(max_upload_mb, max_unzipped_mb)
    if min_label_seconds is not None:
        ctx.min_label_ms = int(min_label_seconds * 1000)
    log.info("database: %s", ctx.db.url)
    demo = build_app(ctx)
    print(f"prefstudio is starting on http://{host}:{port}", flush=True)
    try:
        demo.queue(default_concurrency_limit=8).launch(server_name=host, server_port=port, show_error=True,
                                                       max_file_size=ctx.limits.max_upload_bytes, **launch_kwargs())
    finally:
        if ctx.worker is not None:
            ctx.worker.stop()
        if ctx.jobs is not None:
            # Running jobs are left to finish or be marked interrupted on the next start.
            ctx.jobs.stop()
