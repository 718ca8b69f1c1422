"""The evaluation job: a tuned adapter against its base model on held-out prompts, judged by a reward model.

* At submit (:func:`freeze`, in the runner's transaction) the prompts are written into the run
  folder: by default the prompts the adapter's training run held out (as its ``split.json``
  recorded them), or the project's prompts ("all" / "unlabelled"). The held-out human pairs go beside
  them, to measure the reward model's agreement with people.
* :func:`run` (in the job subprocess) evaluates (:func:`alignment.evaluation.evaluate_against_base`),
  reporting prompts done / total with an ETA, and writes one row per prompt (both answers, their
  scores, lengths and the KL estimate) and the metrics.
* :func:`record` (in the runner, in the transaction that marks the job succeeded) stores an
  :class:`~storage.models.Evaluation` row linked to the job, the project and the trained models
  (lineage), with metrics computed again from the rows file, so what is stored and shown is
  exactly what the stored scores say.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.settings import check_optional_count, help_field
from alignment.evaluation import (
    EvalResult, agreement_text, evaluate_against_base, held_out_pairs, held_out_prompts,
    kl_estimate_text, overlap_text, read_rows, summarize_rows, write_rows,
)
from alignment.run_configs import EVAL_MAX_PROMPTS, EvalConfig, adapter_base_model
from alignment.training.data import load_pairs
from annotation.jobs.best_of_n import ProgressEvents, _write_json
from annotation.services.best_of_n import read_prompts
from storage.errors import InputError
from storage.exporters import trl_chat_pair_row, write_rows as write_jsonl
from storage.models import Evaluation, Job, Project, Snapshot, TrainedModel
from storage.snapshots import PROMPT_SELECTIONS, create_prompt_snapshot

HELD_OUT = "held-out"
SELECTIONS = (HELD_OUT, *PROMPT_SELECTIONS)
PROMPTS_FILE = "prompts.jsonl"
PAIRS_FILE = "human_pairs.jsonl"
METRICS_FILE = "metrics.json"


@dataclass(kw_only=True)
class EvalJobConfig(EvalConfig):
    """Evaluation over a project's held-out prompts (or its prompts), stored with the model's lineage."""

    project: str = help_field("", "Project the evaluation belongs to (set at submit).")
    prompts: str = help_field(HELD_OUT, f"Which prompts: {HELD_OUT} (those the adapter's training held out), all or "
                                        f"unlabelled (the project's prompts without a label).")
    max_prompts: int | None = help_field(EVAL_MAX_PROMPTS, "At most this many prompts (empty: all of them). Each takes a few seconds "
                                             "per 100 tokens on a CPU.")

    def validate(self) -> None:
        super().validate()
        if self.prompts not in SELECTIONS:
            raise ValueError(f"prompts must be one of {', '.join(SELECTIONS)}, got {self.prompts!r}")
        check_optional_count("max_prompts", self.max_prompts)


# --------------------------------------------------------------------------------------------
# At submit, in the runner's transaction
# --------------------------------------------------------------------------------------------

def _held_out(adapter: str) -> tuple[list, str]:
    """The adapter's held-out pairs (human labels to check the reward model against), and why there
    are none when there are none (a PPO / GRPO run has prompts, no pairs)."""
    try:
        pairs = held_out_pairs(adapter)
    except ValueError as exc:
        return [], str(exc)
    return pairs, "" if pairs else "its training held out no prompts (eval_fraction 0)"


def _held_out_prompts(adapter: str, instead: str) -> list:
    """The prompts the adapter's training held out (PPO / GRPO runs' included), or InputError
    saying why there are none and what to do ``instead``."""
    try:
        prompts = held_out_prompts(adapter)
    except ValueError as exc:
        raise InputError(f"{adapter} has no held-out prompts to evaluate on ({exc}): {instead}") from None
    if not prompts:
        raise InputError(f"{adapter} has no held-out prompts to evaluate on (its training held out none: "
                         f"eval_fraction 0): {instead}")
    return prompts


def freeze(session, project: Project, out_dir: Path, values: dict[str, Any]) -> tuple[Snapshot, dict[str, Any]]:
    """Write the prompts (and held-out human pairs) the job will read; returns the snapshot and the
    config values pointing at them. Bad settings raise InputError and write nothing that stays."""
    selection = values.get("prompts", HELD_OUT)
    limit = values.get("max_prompts", EVAL_MAX_PROMPTS)
    adapter = values.get("adapter") or ""
    if not adapter or not Path(adapter).is_dir():
        raise InputError("adapter: pick the tuned model to evaluate (a DPO job's output)")
    pairs, _ = _held_out(adapter)
    extra: dict[str, Any] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    if pairs:
        write_jsonl([trl_chat_pair_row(p.prompt_messages, True, p.chosen, p.rejected) for p in pairs],
                    out_dir / PAIRS_FILE)
        extra["pairs"] = str(out_dir / PAIRS_FILE)
    if selection != HELD_OUT:
        snapshot = create_prompt_snapshot(session, project, out_dir, selection, limit)
        return snapshot, extra
    prompts = _held_out_prompts(adapter, "choose prompts 'all' or 'unlabelled'")[:limit]
    path = out_dir / PROMPTS_FILE
    write_jsonl([{"messages": m} for m in prompts], path)
    snapshot = Snapshot(project_id=project.id, filters={"prompts": selection, "max_prompts": limit},
                        counts={"prompts": len(prompts), "rows": len(prompts), "human_pairs": len(pairs)},
                        path=str(path))
    session.add(snapshot)
    session.flush()
    return snapshot, extra


# --------------------------------------------------------------------------------------------
# In the job subprocess
# --------------------------------------------------------------------------------------------

def run(config: EvalJobConfig, callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """Evaluate, write the rows and the metrics; returns the job's result summary."""
    progress = ProgressEvents(callbacks)
    prompts, _, _ = read_prompts(config.data)
    human_pairs = load_pairs(config.pairs) if config.pairs else []
    result = evaluate_and_write(config, prompts, human_pairs, progress)
    progress.end(result.metrics)
    return {"output": str(config.results_path), "metrics_file": str(Path(config.out) / METRICS_FILE),
            "prompts": len(result.rows), "metrics": result.metrics, "seconds": result.seconds}


def evaluate_and_write(config: EvalConfig, prompts: list, human_pairs: list, progress=None):
    """Evaluate, then write the per-prompt rows and the metrics into the output folder."""
    result = evaluate_against_base(config, prompts, human_pairs, progress=progress)
    write_rows(config.results_path, result.rows)
    _write_json(Path(config.out) / METRICS_FILE, result.metrics)
    return result


def evaluate_headless(adapter: str, reward: str, out: str, *, model: str | None = None,
                      prompts_file: str | None = None, max_prompts: int | None = EVAL_MAX_PROMPTS,
                      temperature: float | None = None, top_p: float | None = None,
                      max_new_tokens: int | None = None, seed: int | None = None, progress=None):
    """`app.py eval`: the same evaluation without a database, from files; writes rows and metrics to ``out``."""
    out_dir = Path(out)
    if not adapter or not Path(adapter).is_dir():
        raise InputError(f"adapter folder not found: {adapter!r}")
    pairs, _ = _held_out(adapter)
    if prompts_file is None:
        prompts = _held_out_prompts(adapter, "pass --prompts FILE")
    else:
        prompts, _, _ = read_prompts(prompts_file)
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts_path = out_dir / PROMPTS_FILE
    write_jsonl([{"messages": m} for m in prompts], prompts_path)
    try:
        # Settings left unset (None) take EvalConfig's defaults: one place for them, CLI included.
        sampling = {k: v for k, v in dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                          seed=seed).items() if v is not None}
        config = EvalConfig(data=str(prompts_path), out=str(out_dir), adapter=adapter, reward=reward, model=model,
                            **sampling)
    except ValueError as exc:
        raise InputError(f"invalid eval settings: {exc}") from None
    return evaluate_and_write(config, prompts, pairs, progress)


def report_lines(result: EvalResult) -> list[str]:
    """What `app.py eval` prints about a finished evaluation."""
    m = result.metrics
    lines = [f"win rate vs base (reward model): {m['win_rate']:.1%} "
             f"[{m['win_rate_low']:.1%}, {m['win_rate_high']:.1%}] over {m['n']} prompts",
             f"mean reward base {m['reward/base']:.3f} -> tuned {m['reward/tuned']:.3f}; mean length "
             f"{m['length/base']:.1f} -> {m['length/tuned']:.1f} tokens",
             kl_estimate_text(m["kl/tuned_to_base"], m["n"], result.params),
             overlap_text(m)]
    if "rm_agreement_n" in m:
        lines.append(agreement_text(m))
    return lines


# --------------------------------------------------------------------------------------------
# In the runner, once the subprocess succeeded
# --------------------------------------------------------------------------------------------

def _trained_model_id(session, path: str | None) -> int | None:
    if not path:
        return None
    wanted = str(Path(path).resolve())
    for model in session.query(TrainedModel).all():
        if str(Path(model.path).resolve()) == wanted:
            return model.id
    return None


def record(session, job: Job, summary: dict[str, Any]) -> str:
    """An Evaluation row with the model's lineage; metrics recomputed from the stored rows."""
    rows = read_rows(summary["output"])
    metrics = summarize_rows(rows)
    stored = json.loads(Path(summary["metrics_file"]).read_text(encoding="utf-8"))
    metrics.update({k: v for k, v in stored.items() if k.startswith("rm_")})  # measured beside the rows
    config = job.config
    evaluation = Evaluation(job_id=job.id, project_id=job.project_id,
                            model_id=_trained_model_id(session, config.get("adapter")),
                            reward_model_id=_trained_model_id(session, config.get("reward")),
                            adapter=config.get("adapter"),
                            base_model=config.get("model") or adapter_base_model(config["adapter"]) or "default",
                            metrics=metrics, path=summary["output"])
    session.add(evaluation)
    session.flush()
    return (f"evaluation {evaluation.id}: win rate vs base {metrics['win_rate']:.0%} over {metrics['n']} prompts "
            f"(by reward model)")
