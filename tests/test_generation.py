"""Generation ahead of annotators: items with provenance, the worker's top-up, failures, the process."""
from __future__ import annotations

import os
import shutil
import signal
import time

from sqlalchemy import func, select

from annotation.generation import GenerationWorker, WorkerStatus, default_backend_factory, generate_items
from annotation.generator_process import GeneratorProcess
from annotation.services import labelling
from annotation.services.projects import ProjectSettings, create_project
from annotation.services.prompts import add_text_prompts
from storage.db import transaction
from storage.models import Item, ItemStatus, Response


def make_generating_project(db, name, model, prompts=6, queue_target=3, k=2, mode="pairwise"):
    create_project(db, ProjectSettings(name=name, model=str(model), k=k, mode=mode, max_new_tokens=6,
                                       queue_target=queue_target))
    add_text_prompts(db, name, "\n".join(f"{name} prompt {i}" for i in range(prompts)))


def ready_items(db, name=None) -> int:
    with transaction(db) as s:
        stmt = select(func.count()).select_from(Item).where(Item.status == ItemStatus.ready)
        return s.scalar(stmt)


def test_generate_items_stores_k_responses_with_provenance(db, tiny_model_dir):
    make_generating_project(db, "g", tiny_model_dir, k=3, mode="listwise")
    backend = default_backend_factory(str(tiny_model_dir))
    result = generate_items(db, "g", backend, limit=4, seed=7, batch_prompts=2)
    assert (result.items, result.responses) == (4, 12)
    with transaction(db) as s:
        items = s.scalars(select(Item)).all()
        assert len(items) == 4 and len({i.prompt_id for i in items}) == 4
        for item in items:
            assert [r.position for r in item.responses] == [0, 1, 2]
            for r in item.responses:
                assert r.model == str(tiny_model_dir) and r.source == "generated"
                assert r.sampling == {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 6, "seed": r.seed}
                assert r.seed is not None and 0 < r.num_tokens <= 6 and r.finish_reason in ("stop", "length")
    # A second call only covers prompts that have no item yet.
    assert generate_items(db, "g", backend, limit=10, seed=7).items == 2


def test_worker_keeps_the_queue_topped_up(db, tiny_model_dir):
    make_generating_project(db, "g", tiny_model_dir, prompts=8, queue_target=3)
    worker = GenerationWorker(db, poll_seconds=0.1)
    while worker.run_once():
        pass
    assert ready_items(db) == 3
    for _ in range(2):
        labelling.submit_pairwise(db, labelling.next_item(db, "g", "ann"), "a")
    assert ready_items(db) == 1
    while worker.run_once():
        pass
    assert ready_items(db) == 3 and worker.status.state == "idle" and worker.status.generated == 5


def test_a_broken_model_fails_its_project_only_and_is_retried_later(db, tiny_model_dir, tmp_path):
    # The model was there when the project was created (the project form checks it) and was
    # deleted from disk afterwards.
    gone = tmp_path / "no-such-model"
    shutil.copytree(tiny_model_dir, gone)
    make_generating_project(db, "broken", gone)
    shutil.rmtree(gone)
    make_generating_project(db, "fine", tiny_model_dir)
    status_file = tmp_path / "status.json"
    worker = GenerationWorker(db, retry_seconds=3600, status_path=status_file)
    worker.run_once()
    assert "broken" in worker.status.errors and "not found" in worker.status.errors["broken"]
    assert ready_items(db) >= 1  # the good project still got items
    saved = WorkerStatus.load(status_file)
    assert saved.state == "error" and "broken" in saved.errors
    calls = []
    worker.backend_factory = lambda spec: calls.append(spec) or default_backend_factory(spec)
    worker.run_once()
    assert str(tmp_path / "no-such-model") not in calls  # backing off, not hammering
    worker.wake()  # settings changed: try again now
    worker.run_once()
    assert str(tmp_path / "no-such-model") in calls


def test_generator_process_survives_a_crash(db, tiny_model_dir, tmp_path):
    make_generating_project(db, "g", tiny_model_dir, prompts=10, queue_target=2)
    proc = GeneratorProcess(db.engine.url.render_as_string(hide_password=False), status_path=tmp_path / "status.json")
    proc.restart_after_seconds = 0.5
    proc.start()
    try:
        deadline = time.time() + 120
        while ready_items(db) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert ready_items(db) == 2
        os.kill(proc.proc.pid, signal.SIGKILL)  # a hard crash (say, out of memory)
        proc.proc.wait()
        assert proc.status.state == "stopped" and "-9" in proc.status.message
        time.sleep(0.6)
        proc.wake()  # supervision restarts it
        assert proc.proc.poll() is None
        labelling.submit_pairwise(db, labelling.next_item(db, "g", "ann"), "b")
        deadline = time.time() + 120
        while ready_items(db) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert ready_items(db) == 2
        with transaction(db) as s:
            assert s.scalar(select(func.count()).select_from(Response)) == 6
    finally:
        proc.stop()
