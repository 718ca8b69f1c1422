"""Generation ahead of annotators: turn prompts into items of K sampled responses.

`generate_items` is the one routine that samples and stores; the CLI `generate` command calls it
directly and `GenerationWorker`, a background thread in the server, calls it whenever a project has
fewer ready items than its `queue_target`, so annotators never wait for the model while the queue
is warm. The model runs outside any database transaction; each batch of items is then stored in
one short transaction, so labels submitted meanwhile are never blocked for long.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import exists, func, select

from alignment.sampling import GenerationBackend, SamplingParams
from annotation.services.projects import find_project
from storage.db import Database, transaction
from storage.models import Item, ItemStatus, Project, Prompt, Response

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], GenerationBackend]


def default_backend_factory(model_spec: str) -> GenerationBackend:
    from alignment.sampling import backend_for

    return backend_for(model_spec)


@dataclass
class GenerationResult:
    project: str
    items: int = 0
    responses: int = 0


def _prompts_without_items(session, project: Project, limit: int) -> list[Prompt]:
    return list(session.scalars(
        select(Prompt).where(Prompt.project_id == project.id)
        .where(~exists().where(Item.prompt_id == Prompt.id))
        .order_by(Prompt.id).limit(limit)))


def generate_items(db: Database, project_name: str, backend: GenerationBackend, limit: int, *,
                   k: int | None = None, temperature: float | None = None, top_p: float | None = None,
                   max_new_tokens: int | None = None, seed: int | None = None, batch_prompts: int = 4,
                   model_label: str | None = None,
                   progress: Callable[[int, int], None] | None = None) -> GenerationResult:
    """Sample K responses for up to `limit` prompts that have no item yet and store them as items.

    Sampling parameters default to the project's settings; each batch gets its own seed (recorded
    on every response) so a run can be reproduced batch by batch. `model_label` is the model
    recorded on the responses when the backend is not the project's own model.
    """
    with transaction(db) as s:
        project = find_project(s, project_name)
        prompts = [(p.id, p.messages) for p in _prompts_without_items(s, project, limit)]
        k = k or project.k
        base = SamplingParams(
            temperature=project.temperature if temperature is None else temperature,
            top_p=project.top_p if top_p is None else top_p,
            max_new_tokens=project.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )
        model_spec, adapter, project_id = model_label or project.model, project.adapter, project.id
    result = GenerationResult(project=project_name)
    rng = random.Random(seed)
    for start in range(0, len(prompts), batch_prompts):
        batch = prompts[start:start + batch_prompts]
        batch_seed = rng.randrange(2**31)
        params = SamplingParams(temperature=base.temperature, top_p=base.top_p,
                                max_new_tokens=base.max_new_tokens, seed=batch_seed)
        samples = backend.sample([messages for _, messages in batch], k, params)
        with transaction(db) as s:
            for (prompt_id, _), prompt_samples in zip(batch, samples):
                # Another worker may have covered this prompt meanwhile: keep one item per prompt.
                if s.scalar(select(Item.id).where(Item.prompt_id == prompt_id).limit(1)) is not None:
                    continue
                item = Item(project_id=project_id, prompt_id=prompt_id, status=ItemStatus.ready)
                s.add(item)
                for position, sample in enumerate(prompt_samples):
                    item.responses.append(Response(
                        prompt_id=prompt_id, position=position, text=sample.text, model=model_spec,
                        adapter=adapter, sampling=params.to_dict(), seed=batch_seed,
                        num_tokens=sample.num_tokens, finish_reason=sample.finish_reason, source="generated"))
                result.items += 1
                result.responses += len(prompt_samples)
        if progress:
            progress(min(start + batch_prompts, len(prompts)), len(prompts))
    return result


def ready_deficit(db: Database, project_name: str) -> int:
    """How many more items the project wants generated to reach its queue target."""
    with transaction(db) as s:
        project = find_project(s, project_name)
        ready = s.scalar(select(func.count()).select_from(Item)
                         .where(Item.project_id == project.id, Item.status == ItemStatus.ready)) or 0
        return max(0, project.queue_target - int(ready))


@dataclass
class WorkerStatus:
    state: str = "idle"  # idle | loading model | generating | error | stopped
    project: str | None = None
    message: str = ""
    generated: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # project -> last error

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(tmp, path)  # readers never see a half-written file

    @classmethod
    def load(cls, path: Path) -> WorkerStatus:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return cls(state="starting")


class GenerationWorker(threading.Thread):
    """Keeps every project's ready queue topped up, one small batch at a time.

    A project whose generation fails (say, a model that cannot be loaded) is retried after
    `retry_seconds`, not on every poll, and the others carry on meanwhile.
    """

    def __init__(self, db: Database, backend_factory: BackendFactory = default_backend_factory,
                 poll_seconds: float = 1.0, batch_prompts: int = 2, retry_seconds: float = 30.0,
                 status_path: Path | None = None):
        super().__init__(name="generation-worker", daemon=True)
        self.db = db
        self.backend_factory = backend_factory
        self.poll_seconds = poll_seconds
        self.batch_prompts = batch_prompts
        self.retry_seconds = retry_seconds
        self.status_path = status_path
        self.status = WorkerStatus()
        self._backends: dict[str, GenerationBackend] = {}
        self._failed_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Ask for an immediate pass (after prompts are added or settings change)."""
        self._failed_at.clear()
        self._wake.set()

    def _publish(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        if self.status_path is not None:
            self.status.save(self.status_path)

    def _backend(self, spec: str) -> GenerationBackend:
        if spec not in self._backends:
            self._publish(state="loading model", message=f"loading {spec}")
            self._backends[spec] = self.backend_factory(spec)
        return self._backends[spec]

    def _in_backoff(self, project: str) -> bool:
        failed = self._failed_at.get(project)
        return failed is not None and time.monotonic() - failed < self.retry_seconds

    def run_once(self) -> int:
        """One pass over all projects; returns how many items were generated."""
        made = 0
        with transaction(self.db) as s:
            projects = [(p.name, p.model) for p in s.scalars(select(Project).order_by(Project.id))]
        for name, spec in projects:
            if self._stop.is_set():
                break
            if self._in_backoff(name):
                continue
            try:
                deficit = ready_deficit(self.db, name)
                if deficit == 0:
                    continue
                backend = self._backend(spec)
                self._publish(state="generating", project=name, message="")
                result = generate_items(self.db, name, backend, limit=min(deficit, self.batch_prompts),
                                        batch_prompts=self.batch_prompts)
                made += result.items
                self.status.generated += result.items
                self.status.errors.pop(name, None)
                self._failed_at.pop(name, None)
            except Exception as exc:  # noqa: BLE001 - one bad project must not stop the others
                log.exception("generation failed for project %s", name)
                self.status.errors[name] = f"{type(exc).__name__}: {exc}"
                self._failed_at[name] = time.monotonic()
        self._publish(state="error" if self.status.errors else "idle", project=None, message="")
        return made

    def run(self) -> None:
        while not self._stop.is_set():
            made = self.run_once()
            if made == 0:  # nothing to do (or failing): wait for a wake-up or the next poll
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
