"""The best-of-N job: N candidates for each of a project's prompts, scored by a reward model, the best
one kept, as a dataset and optionally as new items to label.

* At submit, the runner freezes the project's prompts into the run folder
  (:func:`storage.snapshots.create_prompt_snapshot`) and :func:`check` refuses settings the project
  cannot take, so a bad job is never queued.
* :func:`run` (in the job subprocess) samples and scores, reporting prompts done / total with an ETA
  in the progress file the Train tab polls, and writes the dataset (one row per prompt: prompt, N
  completions, scores, best, best index) and every candidate with its provenance.
* :func:`record` (in the runner, in the transaction that marks the job succeeded) stores the
  candidates as items of the job's project when asked. Storing there rather than in the subprocess
  keeps database credentials out of the job process and makes "succeeded" and "stored" one commit:
  a job is never half-recorded, and resuming a job cannot store its candidates twice.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.run_configs import BestOfNConfig
from alignment.settings import check_optional_count, help_field
from alignment.training.callbacks import as_callbacks, emit, eta_seconds
from annotation.services.best_of_n import BestOfNRun, check_candidates_fit, run_best_of_n, store_candidates
from storage.errors import InputError
from storage.models import Job, Project
from storage.snapshots import PROMPT_SELECTIONS

CANDIDATES_FILE = "candidates.json"


@dataclass(kw_only=True)
class BestOfNJobConfig(BestOfNConfig):
    """Best-of-N over a project's prompts, optionally keeping the candidates as items to label."""

    project: str = help_field("", "Project whose prompts are read and where candidates are stored (set at submit).")
    prompts: str = help_field("all", f"Which of the project's prompts: {' or '.join(PROMPT_SELECTIONS)} "
                                     f"(no label of any kind yet).")
    max_prompts: int | None = help_field(None, "At most this many prompts, oldest first (empty: all of them).")
    store_as_items: bool = help_field(False, "Also store each prompt's N candidates as a new item of the project, "
                                             "ready for labelling (N must suit its mode: pairwise 2, listwise 3-8, "
                                             "pointwise 1-8).")

    def validate(self) -> None:
        super().validate()
        if self.prompts not in PROMPT_SELECTIONS:
            raise ValueError(f"prompts must be one of {', '.join(PROMPT_SELECTIONS)}, got {self.prompts!r}")
        check_optional_count("max_prompts", self.max_prompts)
        if not isinstance(self.store_as_items, bool):
            raise ValueError(f"store_as_items must be true or false, got {self.store_as_items!r}")


def check(project: Project, config: BestOfNJobConfig) -> None:
    """Refuse, at submit, what would only fail at the end: items of N the project's mode cannot label."""
    if config.store_as_items:
        check_candidates_fit(project, config.n)


# --------------------------------------------------------------------------------------------
# In the job subprocess
# --------------------------------------------------------------------------------------------

class ProgressEvents:
    """best_of_n's ``progress(done, total)`` as the events of the progress file, prompts counted as
    steps, so the Train tab's bar and ETA work as for training. The clock starts at the first call,
    after the models are loaded, so loading time does not skew the ETA."""

    def __init__(self, callbacks: Iterable[Any]):
        self.callbacks = as_callbacks(callbacks)
        self.started: float | None = None
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        first = self.started is None
        if first:
            self.started = time.monotonic()
        self.done, self.total = done, total
        emit(self.callbacks, "train_begin" if first else "step", self._state())

    def end(self, metrics: dict[str, float]) -> None:
        emit(self.callbacks, "train_end", {**self._state(), "metrics": metrics})

    def _state(self) -> dict[str, Any]:
        elapsed = time.monotonic() - (self.started or time.monotonic())
        return {"step": self.done, "total_steps": self.total, "loss": None, "metrics": {}, "unit": "prompt",
                "elapsed_s": elapsed, "eta_s": eta_seconds(self.done, self.total, elapsed)}


def run_metrics(run: BestOfNRun) -> dict[str, float]:
    """Mean reward of the picks against the mean of all candidates: what best-of-N bought."""
    best = [r.best.score for r in run.results]
    every = [s for r in run.results for s in r.scores]
    return {"scores/best_mean": statistics.fmean(best), "scores/mean": statistics.fmean(every),
            "scores/gain": statistics.fmean(best) - statistics.fmean(every)}


def run(config: BestOfNJobConfig, callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """Sample, score, write the dataset and the candidates; returns the job's result summary."""
    progress = ProgressEvents(callbacks)
    result = run_best_of_n(config.data, config.reward, model=config.model, adapter=config.adapter, n=config.n,
                           temperature=config.temperature, top_p=config.top_p,
                           max_new_tokens=config.max_new_tokens, seed=config.seed, batch_size=config.batch_size,
                           out=config.dataset_path, device=config.resolved_device(), progress=progress)
    candidates = Path(config.out) / CANDIDATES_FILE
    _write_json(candidates, result.to_dict())
    metrics = run_metrics(result)
    progress.end(metrics)
    return {"output": str(config.dataset_path), "candidates": str(candidates), "prompts": len(result.results),
            "n": result.n, "model": result.model, "metrics": metrics}


def _write_json(path: Path, value: Any) -> None:
    # Written beside and renamed: a job killed here leaves no half file for `record` to trip on.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# In the runner, once the subprocess succeeded
# --------------------------------------------------------------------------------------------

def record(session, job: Job, summary: dict[str, Any]) -> str | None:
    """Store the candidates as items of the job's project, if the job asked to (caller's transaction)."""
    if not job.config.get("store_as_items"):
        return None
    project = session.get(Project, job.project_id) if job.project_id else None
    if project is None:
        raise InputError("the job's project was deleted: its candidates cannot be stored as items")
    results = BestOfNRun.from_dict(json.loads(Path(summary["candidates"]).read_text(encoding="utf-8")))
    stored = store_candidates(session, project, results)
    return (f"stored {len(stored.item_ids)} items ({stored.responses} responses) in project {project.name!r} "
            f"for labelling")
