"""Generation ahead of annotators: turn prompts into items of K sampled responses.

`generate_items` is the one routine that samples and stores; the CLI `generate` command calls it
directly and `GenerationWorker`, a background thread in the server, calls it whenever a project has
fewer ready items than its `queue_target`, so annotators never wait for the model while the queue
is warm. The model runs outside any database transaction; each batch of items is then stored in
one short transaction, so labels submitted meanwhile are never blocked for long.

After generating, the worker does the project's follow-up work on the new items: with a judge
model it stores the LLM judge's verdict on each new pair (`annotation.services.judge`), and with
`queue_order = uncertainty` it scores the ready items' responses with the project's reward model
(`score_items`, stored in `Response.rm_score`), which orders what annotators see next. Either can
fail (a judge that cannot be loaded, say): that is logged and reported, and generation carries on.
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
from typing import Any

from sqlalchemy import exists, func, select

from alignment.sampling import GenerationBackend, SamplingParams
from annotation.services.judge import JudgeLoader, default_judge_loader, judge_items
from annotation.services.projects import find_project
from storage.db import Database, reading, transaction
from storage.models import Item, ItemStatus, Mode, Project, Prompt, QueueOrder, Response

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], GenerationBackend]
RewardLoader = Callable[[str], Any]  # reward-model folder -> (model, tokenizer)


def default_backend_factory(model_spec: str) -> GenerationBackend:
    """The engine for a model spec: a remote OpenAI-compatible server (``openai:URL#MODEL``) or local transformers."""
    from alignment.remote import OpenAICompatibleBackend, is_remote_spec

    if is_remote_spec(model_spec):
        return OpenAICompatibleBackend.from_spec(model_spec)
    from alignment.sampling import backend_for

    return backend_for(model_spec)


def default_reward_loader(path: str) -> Any:
    from alignment.training.reward import load_reward_model

    return load_reward_model(path)


@dataclass
class GenerationResult:
    project: str
    items: int = 0
    responses: int = 0
    item_ids: list[int] = field(default_factory=list)  # the items stored, in order


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
    with reading(db) as s:
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
                s.flush()
                result.item_ids.append(item.id)
                result.items += 1
                result.responses += len(prompt_samples)
        if progress:
            progress(min(start + batch_prompts, len(prompts)), len(prompts))
    return result


def _unscored_ready_items(session, project: Project, limit: int) -> list[Item]:
    has_unscored = exists().where(Response.item_id == Item.id, Response.rm_score.is_(None))
    return list(session.scalars(select(Item).where(Item.project_id == project.id, Item.status == ItemStatus.ready)
                                .where(has_unscored).order_by(Item.id).limit(limit)))


def score_items(db: Database, project_name: str, reward_model: Any, reward_path: str, limit: int = 16,
                batch_size: int = 8) -> int:
    """Score up to `limit` ready items whose responses have no reward yet; returns how many were scored.

    `reward_path` is the folder `reward_model` was loaded from: if the project's queue reward model
    changed while scoring ran, the scores are from the wrong model and are dropped.
    """
    from alignment.training.reward import score

    with reading(db) as s:
        project = find_project(s, project_name)
        rows = [(r.id, item.prompt.messages, r.text) for item in _unscored_ready_items(s, project, limit)
                for r in item.responses]
    if not rows:
        return 0
    model, tokenizer = reward_model
    rewards = score(model, tokenizer, [m for _, m, _ in rows], [t for _, _, t in rows], batch_size=batch_size)
    with transaction(db) as s:
        if find_project(s, project_name).queue_reward_model != reward_path:
            return 0  # settings changed meanwhile: the next pass scores with the new model
        scored_items = set()
        for (response_id, _, _), reward in zip(rows, rewards):
            response = s.get(Response, response_id)
            if response is not None:
                response.rm_score = float(reward)
                scored_items.add(response.item_id)
    return len(scored_items)


def ready_deficit(db: Database, project_name: str) -> int:
    """How many more items the project wants generated to reach its queue target."""
    with reading(db) as s:
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
    # project -> last failure of the follow-up work (judging, reward scoring); generation goes on.
    warnings: dict[str, str] = field(default_factory=dict)

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


@dataclass(frozen=True)
class _Plan:
    """What the worker needs of a project's settings, read once per pass."""

    name: str
    model: str
    mode: Mode
    judge_model: str | None
    queue_order: QueueOrder
    queue_reward_model: str | None

    @classmethod
    def of(cls, p: Project) -> _Plan:
        return cls(p.name, p.model, p.mode, p.judge_model, p.queue_order, p.queue_reward_model)


class GenerationWorker(threading.Thread):
    """Keeps every project's ready queue topped up, one small batch at a time, and does the
    follow-up work on new items (judge verdicts, reward scores for the queue order).

    A project whose generation fails (say, a model that cannot be loaded) is retried after
    `retry_seconds`, not on every poll, and the others carry on meanwhile; the same back-off
    applies to a judge or reward model that fails.
    """

    def __init__(self, db: Database, backend_factory: BackendFactory = default_backend_factory,
                 poll_seconds: float = 1.0, batch_prompts: int = 2, retry_seconds: float = 30.0,
                 status_path: Path | None = None, judge_loader: JudgeLoader = default_judge_loader,
                 reward_loader: RewardLoader = default_reward_loader, score_batch_items: int = 8):
        super().__init__(name="generation-worker", daemon=True)
        self.db = db
        self.backend_factory = backend_factory
        self.judge_loader = judge_loader
        self.reward_loader = reward_loader
        self.poll_seconds = poll_seconds
        self.batch_prompts = batch_prompts
        self.retry_seconds = retry_seconds
        self.score_batch_items = score_batch_items
        self.status_path = status_path
        self.status = WorkerStatus()
        self._backends: dict[str, GenerationBackend] = {}
        self._judges: dict[str, Any] = {}
        self._reward_models: dict[str, Any] = {}
        self._failed_at: dict[str, float] = {}
        self._follow_up_failed_at: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Ask for an immediate pass (after prompts are added or settings change)."""
        self._failed_at.clear()
        self._follow_up_failed_at.clear()
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

    def _judge(self, spec: str) -> Any:
        # Loaded once and kept: every later item of every project with this judge reuses it.
        if spec not in self._judges:
            self._publish(state="loading model", message=f"loading judge {spec}")
            self._judges[spec] = self.judge_loader(spec)
        return self._judges[spec]

    def _reward_model(self, path: str) -> Any:
        if path not in self._reward_models:
            self._publish(state="loading model", message=f"loading reward model {path}")
            self._reward_models[path] = self.reward_loader(path)
        return self._reward_models[path]

    def _in_backoff(self, project: str) -> bool:
        failed = self._failed_at.get(project)
        return failed is not None and time.monotonic() - failed < self.retry_seconds

    def _generate(self, name: str, spec: str) -> list[int]:
        """Top up one project's queue; the new items' ids (none when full, failing or backing off)."""
        if self._in_backoff(name):
            return []
        try:
            deficit = ready_deficit(self.db, name)
            if deficit == 0:
                return []
            backend = self._backend(spec)
            self._publish(state="generating", project=name, message="")
            result = generate_items(self.db, name, backend, limit=min(deficit, self.batch_prompts),
                                    batch_prompts=self.batch_prompts)
        except Exception as exc:  # noqa: BLE001 - one bad project must not stop the others
            log.exception("generation failed for project %s", name)
            self.status.errors[name] = f"{type(exc).__name__}: {exc}"
            self._failed_at[name] = time.monotonic()
            return []
        self.status.generated += result.items
        self.status.errors.pop(name, None)
        self._failed_at.pop(name, None)
        return result.item_ids

    def _follow_up(self, name: str, what: str, key: str, work: Callable[[], int]) -> int:
        """Run judging or scoring for a project: failures are logged, reported and backed off, never raised."""
        failed = self._follow_up_failed_at.get((what, key))
        if failed is not None and time.monotonic() - failed < self.retry_seconds:
            return 0
        try:
            done = work()
        except Exception as exc:  # noqa: BLE001 - a broken judge or reward model must not stop generation
            log.exception("%s failed for project %s", what, name)
            self.status.warnings[name] = f"{what} ({key}): {type(exc).__name__}: {exc}"
            self._follow_up_failed_at[(what, key)] = time.monotonic()
            return 0
        self._follow_up_failed_at.pop((what, key), None)
        if self.status.warnings.get(name, "").startswith(f"{what} "):
            self.status.warnings.pop(name)
        return done

    def _forget_unused(self, projects: list[_Plan]) -> None:
        # A reward model is a whole base model: drop the ones no project orders its queue by any more.
        wanted = {p.queue_reward_model for p in projects if p.queue_order == QueueOrder.uncertainty}
        for path in set(self._reward_models) - wanted:
            del self._reward_models[path]

    def run_once(self) -> int:
        """One pass over all projects; returns how much was done (items generated or scored)."""
        done = 0
        with reading(self.db) as s:
            projects = [_Plan.of(p) for p in s.scalars(select(Project).where(Project.staging.is_(False))
                                                       .order_by(Project.id))]
        self._forget_unused(projects)
        for project in projects:
            if self._stop.is_set():
                break
            name = project.name
            new_items = self._generate(name, project.model)
            done += len(new_items)
            if project.judge_model and project.mode == Mode.pairwise and new_items:
                self._follow_up(name, "judging", project.judge_model,
                                lambda: judge_items(self.db, name, item_ids=new_items,
                                                    judge=self._judge(project.judge_model)).judged)
            if project.queue_order == QueueOrder.uncertainty and project.queue_reward_model:
                path = project.queue_reward_model
                done += self._follow_up(name, "reward scoring", path,
                                        lambda: score_items(self.db, name, self._reward_model(path), path,
                                                            limit=self.score_batch_items))
        state = "error" if self.status.errors else "idle"
        self._publish(state=state, project=None, message="")
        return done

    def run(self) -> None:
        while not self._stop.is_set():
            done = self.run_once()
            if done == 0:  # nothing to do (or failing): wait for a wake-up or the next poll
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
