"""`app.py serve`: open the database, seed a fresh one, start the generator, serve the UI.

Secure by default: once any account exists every page and API call needs a login, on any host
(annotation.auth.web); with no accounts the app is one person's tool (single-user local mode) and
serves loopback only, so `--host 0.0.0.0` is refused until the first admin is created.
"""
from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from annotation.auth import local_mode
from annotation.auth.web import FIRST_ADMIN_HINT, build_web_app, is_loopback
from annotation.generator_process import GeneratorProcess
from annotation.jobs.runner import JobRunner
from annotation.services.data import UploadLimits
from annotation.services.prompts import seed_starter_project
from annotation.ui.app import build_app, launch_kwargs
from annotation.ui.context import UIContext
from storage.db import Database, open_database
from storage.errors import InputError

log = logging.getLogger(__name__)


def default_runs_root(database) -> Path:
    """Run folders live next to a SQLite file (data/runs for data/prefstudio.db), else in ./runs."""
    url = database.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).resolve().parent / "runs"
    return Path("runs").resolve()


def create_context(database: Database, model: str = "default", worker: bool = True, seed: bool = True,
                   runs: str | None = None, jobs: bool = True) -> UIContext:
    if seed and seed_starter_project(database, model=model):
        log.info("new database: created the 'starter' project with the starter prompts")
    ctx = UIContext(db=database, default_model=model)
    if jobs:
        ctx.jobs = JobRunner(database, Path(runs) if runs else default_runs_root(database)).start()
    if worker:
        ctx.worker = GeneratorProcess(database.engine.url.render_as_string(hide_password=False))
        ctx.worker.start()
    return ctx


def access_note(database: Database, host: str) -> str:
    """The start-up line on who may use the app; refuses a non-loopback host while no account exists."""
    if not local_mode(database):
        return "accounts mode: every page and API call needs a login (`python app.py users list` shows who)"
    if not is_loopback(host):
        raise InputError(f"refusing to serve on {host}: no accounts exist, and without them anyone who reaches "
                         f"the port could do anything. First {FIRST_ADMIN_HINT}, then add users and serve again "
                         "(or serve on 127.0.0.1 for single-user local mode)")
    return f"no accounts: single-user local mode on {host}; {FIRST_ADMIN_HINT}"


def serve(db: str | None = None, model: str = "default", host: str = "127.0.0.1", port: int = 7860,
          worker: bool = True, seed: bool = True, runs: str | None = None, max_upload_mb: float | None = None,
          max_unzipped_mb: float | None = None, min_label_seconds: float | None = None) -> None:
    database = open_database(db)
    note = access_note(database, host)  # before anything starts: a refused host leaves nothing running
    ctx = create_context(database, model=model, worker=worker, seed=seed, runs=runs)
    ctx.limits = UploadLimits.from_megabytes(max_upload_mb, max_unzipped_mb)
    if min_label_seconds is not None:
        ctx.min_label_ms = int(min_label_seconds * 1000)
    log.info("database: %s", ctx.db.url)
    demo = build_app(ctx).queue(default_concurrency_limit=8)
    app = build_web_app(ctx.db, demo, show_error=True, max_file_size=ctx.limits.max_upload_bytes, **launch_kwargs())
    print(f"prefstudio is starting on http://{host}:{port}", flush=True)
    print(note, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    try:
        print(f"* Running on local URL:  http://{host}:{port}", flush=True)
        server.run()
    finally:
        if ctx.worker is not None:
            ctx.worker.stop()
        if ctx.jobs is not None:
            # Running jobs are left to finish or be marked interrupted on the next start.
            ctx.jobs.stop()
