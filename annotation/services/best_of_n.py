"""Best-of-N with a trained reward model: run it on a prompt file, keep the candidates for labelling,
and record whether annotators agree with the reward model's pick.

* :func:`run_best_of_n` (``app.py bon``): reads a prompt file in any format ``import`` reads (a
  file with a bad record is refused, every bad line listed), samples N candidates per prompt from
  the policy (a model, optionally with a LoRA adapter), scores them with the reward model and
  returns (and optionally writes) one JSONL row per prompt. Every input is checked before a model
  is loaded.
* :func:`store_as_items`: every candidate becomes a Response (source ``best-of-n``, with model,
  adapter, sampling settings and seed; the reward model's score goes into ``sampling["rm_score"]``),
  grouped in one Item per prompt so annotators can label them. One transaction
  (:func:`store_candidates` is the same inside the caller's transaction).
* :func:`record_rm_pick_verdict`: "is the reward model's pick right?" as a human PairwiseLabel,
  the RM's pick shown as A against another candidate as B: choice ``a`` when the annotator agrees
  the pick is better, ``b`` otherwise. One transaction; bad ids write nothing.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from annotation.services.labelling import Receipt
from annotation.services.paths import check_adapter, check_model, check_reward_model
from annotation.services.projects import ensure_user, find_project
from storage.db import Database, transaction
from storage.errors import InputError
from storage.importers import read_import_file
from storage.models import Choice, Item, ItemStatus, LabelSource, Mode, PairwiseLabel, Project, Prompt, Response
from storage.prompts import content_hash, validate_messages
from storage.records import PromptRecord

log = logging.getLogger(__name__)

SOURCE = "best-of-n"
#: How many candidates per item each project mode can label (pairwise compares exactly two).
CANDIDATES_PER_MODE = {Mode.pairwise: (2, 2), Mode.listwise: (3, 8), Mode.pointwise: (1, 8)}


@dataclass
class BestOfNRun:
    """A finished best-of-N run: the results (``alignment.best_of_n.BestOfN``, one per prompt, in
    file order) and the provenance that goes with every candidate."""

    model: str  # policy model spec as used
    adapter: str | None  # LoRA adapter folder, if any
    reward: str  # reward model folder
    n: int
    sampling: dict[str, Any]  # temperature, top_p, max_new_tokens, seed (the run's seed)
    results: list[Any]
    is_chat: list[bool] = field(default_factory=list)  # per prompt, as read from the file
    meta: list[dict] = field(default_factory=list)  # per prompt: the file's extra columns

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The JSONL rows: prompt messages, the N completions, their scores, the best one and its index."""
        return [{"prompt": r.prompt_messages, "completions": r.texts, "scores": r.scores, "best": r.best.text,
                 "best_index": r.best_index} for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        """Everything, candidates' token counts and seeds included (the rows keep only texts and scores),
        so a run written by a job subprocess can be stored as items later."""
        return {**{k: getattr(self, k) for k in ("model", "adapter", "reward", "n", "sampling", "is_chat", "meta")},
                "results": [asdict(r) for r in self.results]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BestOfNRun:
        from alignment.best_of_n import BestOfN, Candidate

        results = [BestOfN(prompt_messages=r["prompt_messages"], candidates=[Candidate(**c) for c in r["candidates"]],
                           best_index=r["best_index"], seed=r.get("seed")) for r in values["results"]]
        return cls(**{**values, "results": results})


# --------------------------------------------------------------------------------------------
# Running best-of-N
# --------------------------------------------------------------------------------------------

def read_prompts(path: str | Path, fmt: str | None = None) -> tuple[list[list[dict]], list[bool], list[dict]]:
    """(messages, is_chat, meta) per record of a prompt file; a preference-pair file gives its prompts.

    Refuses a file with any bad record, listing every bad line.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"prompts file not found: {path}")
    try:
        report = read_import_file(path, fmt)
    except ValueError as exc:  # an unknown format name
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot read prompts file {path}: {exc}") from None
    if report.errors:
        lines = "\n".join(f"  {error}" for error in report.errors)
        raise InputError(f"prompts file {path} has {len(report.errors)} bad record(s); nothing was generated. "
                         f"Fix them and run again:\n{lines}")
    messages = [r.messages if isinstance(r, PromptRecord) else r.prompt for r in report.records]
    return messages, [r.is_chat for r in report.records], [dict(r.meta or {}) for r in report.records]


def _check_out(out: str | Path) -> Path:
    path = Path(out).expanduser()
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; give a .jsonl file path")
    return path


def write_rows(rows: list[dict], out: str | Path) -> Path:
    """Write rows as JSONL, atomically: a crash never leaves half a file."""
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_best_of_n(prompts_file: str | Path, reward: str | Path, *, model: str | None = None,
                  adapter: str | Path | None = None, n: int = 4, temperature: float = 0.8, top_p: float = 0.95,
                  max_new_tokens: int = 256, seed: int | None = None, fmt: str | None = None, batch_size: int = 8,
                  out: str | Path | None = None, device: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> BestOfNRun:
    """Best-of-N over a prompt file; writes the JSONL rows to ``out`` when given (see :attr:`BestOfNRun.rows`).

    ``model`` defaults to the adapter's base model when an adapter is given, else the embedded
    default. Raises InputError for any bad input, before loading a model.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"--n must be a positive integer, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {batch_size!r}")
    reward_dir = check_reward_model(str(reward))
    out_path = _check_out(out) if out is not None else None
    prompts, is_chat, meta = read_prompts(prompts_file, fmt)
    adapter_dir = str(check_adapter(str(adapter)).resolve()) if adapter is not None else None

    # Only now the heavy imports (torch, transformers): the checks above answer in a second.
    from alignment.best_of_n import best_of_n, policy_backend
    from alignment.run_configs import adapter_base_model
    from alignment.models import resolve_model_spec
    from alignment.sampling import SamplingParams
    from alignment.training.reward import load_reward_model

    try:
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
        spec = model or (adapter_base_model(adapter_dir) if adapter_dir else None) or "default"
        check_model(spec)
        resolve_model_spec(spec)
    except ValueError as exc:
        raise InputError(str(exc)) from None

    # Wrong or incomplete folders, a hub model while offline, an adapter for another base model.
    log.info("loading reward model %s", reward_dir)
    try:
        rm = load_reward_model(reward_dir, device=device)
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot load the reward model in {reward_dir}: {exc}") from None
    log.info("loading policy %s%s", spec, f" + adapter {adapter_dir}" if adapter_dir else "")
    try:
        backend = policy_backend(spec, adapter_dir, device=device)
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot load the policy {spec!r}: {exc}") from None

    results = best_of_n(prompts, n, params, backend, rm.model, rm.tokenizer, batch_size=batch_size,
                        progress=progress)
    run = BestOfNRun(model=spec, adapter=adapter_dir, reward=str(reward_dir.resolve()), n=n,
                     sampling=params.to_dict(), results=results, is_chat=is_chat, meta=meta)
    if out_path is not None:
        write_rows(run.rows, out_path)
    return run


# --------------------------------------------------------------------------------------------
# Storing candidates for labelling
# --------------------------------------------------------------------------------------------

@dataclass
class StoredItems:
    project: str
    item_ids: list[int]  # one per prompt, in run order
    best_response_ids: list[int]  # the reward model's pick in each item
    responses: int = 0
    prompts_added: int = 0


def store_as_items(db: Database, project: str, results: BestOfNRun) -> StoredItems:
    """Store every candidate as a Response, one Item (ready for labelling) per prompt, in one transaction.

    Prompts the project already has are reused; new ones are added with source ``best-of-n``. The
    number of candidates must suit the project's mode (pairwise: 2, listwise: 3-8, pointwise: 1-8).
    """
    with transaction(db) as s:
        return store_candidates(s, find_project(s, project), results)


def check_candidates_fit(project: Project, n: int) -> None:
    """InputError unless items of ``n`` candidates can be labelled in the project's mode."""
    low, high = CANDIDATES_PER_MODE[project.mode]
    if not low <= n <= high:
        wanted = f"exactly {low}" if low == high else f"{low} to {high}"
        raise InputError(f"{n} candidates, but {project.mode.value} project {project.name!r} labels {wanted} "
                         f"responses per item: use a project of another mode or a different N")


def store_candidates(session, proj: Project, results: BestOfNRun) -> StoredItems:
    """:func:`store_as_items` inside the caller's transaction (e.g. the one that marks a job succeeded)."""
    if not results.results:
        raise InputError("nothing to store: the best-of-N run holds no prompts")
    for index, result in enumerate(results.results):
        try:
            check_candidates_fit(proj, len(result.candidates))
        except InputError as exc:
            raise InputError(f"prompt {index + 1} has {exc}") from None
    known = dict(session.execute(select(Prompt.content_hash, Prompt.id).where(Prompt.project_id == proj.id)).all())
    stored = StoredItems(project=proj.name, item_ids=[], best_response_ids=[])
    for index, result in enumerate(results.results):
        try:
            messages = validate_messages(result.prompt_messages)
        except InputError as exc:
            raise InputError(f"prompt {index + 1}: {exc}") from None
        digest = content_hash(messages)
        if digest not in known:
            is_chat = results.is_chat[index] if index < len(results.is_chat) else len(messages) > 1
            meta = results.meta[index] if index < len(results.meta) else {}
            prompt = Prompt(project_id=proj.id, messages=messages, is_chat=is_chat, content_hash=digest,
                            source=SOURCE, meta=meta)
            session.add(prompt)
            session.flush()
            known[digest] = prompt.id
            stored.prompts_added += 1
        item = Item(project_id=proj.id, prompt_id=known[digest], status=ItemStatus.ready)
        session.add(item)
        sampling = {**results.sampling, "seed": result.seed, "run_seed": results.sampling.get("seed"),
                    "n": results.n, "reward_model": results.reward}
        for position, candidate in enumerate(result.candidates):
            item.responses.append(Response(
                prompt_id=known[digest], position=position, text=candidate.text, model=results.model,
                adapter=results.adapter, sampling={**sampling, "rm_score": float(candidate.score)},
                seed=result.seed, num_tokens=candidate.num_tokens, finish_reason=candidate.finish_reason,
                source=SOURCE))
        session.flush()
        stored.item_ids.append(item.id)
        stored.best_response_ids.append(item.responses[result.best_index].id)
        stored.responses += len(result.candidates)
    return stored


# --------------------------------------------------------------------------------------------
# "Is the reward model's pick right?"
# --------------------------------------------------------------------------------------------

def _rm_score(response: Response) -> float | None:
    value = (response.sampling or {}).get("rm_score")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_rm_pick_verdict(db: Database, project: str, user: str, item_id: int, best_response_id: int,
                           other_response_id: int, agree: bool, time_taken_ms: int | None = None) -> Receipt:
    """Record an annotator's verdict on the reward model's pick as a human pairwise label.

    The pick is shown as A and ``other_response_id`` as B (``shown_order`` holds their positions in
    the item); ``agree`` gives choice ``a`` (the pick is better), otherwise ``b``. The same verdict
    sent twice is recorded once (``duplicate=True``); a different one for an item this annotator
    already labelled is refused. In a pairwise project the label counts towards the item's overlap.
    """
    if not isinstance(agree, bool):
        raise InputError(f"agree must be True or False, got {agree!r}")
    if time_taken_ms is not None and (isinstance(time_taken_ms, bool) or not isinstance(time_taken_ms, int)
                                      or time_taken_ms < 0):
        raise InputError(f"time taken must be a whole number of milliseconds >= 0, got {time_taken_ms!r}")
    with transaction(db) as s:
        proj = find_project(s, project)
        item = s.get(Item, item_id) if isinstance(item_id, int) and not isinstance(item_id, bool) else None
        if item is None or item.project_id != proj.id:
            raise InputError(f"unknown item {item_id!r} in project {proj.name!r}")
        responses = {r.id: r for r in item.responses}
        for rid in (best_response_id, other_response_id):
            if rid not in responses:
                raise InputError(f"unknown response id {rid!r} for item {item.id}")
        if best_response_id == other_response_id:
            raise InputError("the reward model's pick and the other response must be two different responses")
        scores = {rid: _rm_score(r) for rid, r in responses.items()}
        if any(v is None for v in scores.values()):
            raise InputError(f"item {item.id} has no reward-model scores: it was not stored from a best-of-N run")
        top = max(scores.values())
        if scores[best_response_id] < top:
            pick = next(rid for rid, v in scores.items() if v == top)
            raise InputError(f"response {best_response_id} is not the reward model's pick for item {item.id} "
                             f"(that is response {pick})")
        annotator = ensure_user(s, user)
        best, other = responses[best_response_id], responses[other_response_id]
        choice = Choice.a if agree else Choice.b
        found = s.scalar(select(PairwiseLabel).where(PairwiseLabel.item_id == item.id,
                                                     PairwiseLabel.user_id == annotator.id))
        if found is not None:
            if (found.response_a_id, found.response_b_id, found.choice) == (best.id, other.id, choice):
                return Receipt("pairwise", item.id, [found.id], duplicate=True)
            raise InputError(f"{annotator.name} already labelled item {item.id}; undo that label first")
        label = PairwiseLabel(prompt_id=item.prompt_id, item_id=item.id, user_id=annotator.id,
                              response_a_id=best.id, response_b_id=other.id,
                              shown_order=[best.position, other.position], choice=choice, source=LabelSource.human, time_taken_ms=time_taken_ms)
        s.add(label)
        s.flush()
        if proj.mode == Mode.pairwise:
            labelled = s.scalar(select(func.count(func.distinct(PairwiseLabel.user_id)))
                                .where(PairwiseLabel.item_id == item.id)) or 0
            if labelled >= proj.overlap:
                item.status = ItemStatus.done
            item.leased_by, item.lease_expires = None, None
        return Receipt("pairwise", item.id, [label.id])
