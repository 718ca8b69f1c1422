"""Trained models (adapters, reward models) with their lineage, and the models tab's "try it"."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select

from alignment.run_folder import ModelKind

from storage.db import Database, reading, transaction
from storage.errors import InputError
from storage.models import Job, Project, Snapshot, TrainedModel


@dataclass
class ModelRow:
    id: int
    name: str
    kind: str
    base_model: str
    job: int | None
    project: str | None
    labels: int | None  # rows in the snapshot it trained on
    filters: str
    heldout_accuracy: float | None
    path: str
    heldout_n: int | None = None  # examples the accuracy was measured on

    @property
    def heldout_text(self) -> str:
        """The accuracy with its n: "0%" from one held-out pair says little, and must say so."""
        if self.heldout_accuracy is None:
            return "–"
        n = f"n={self.heldout_n}" if self.heldout_n is not None else "n unknown"
        return f"{self.heldout_accuracy:.0%} ({n})"


def list_models(db: Database) -> list[ModelRow]:
    rows = []
    with reading(db) as s:
        for m in s.scalars(select(TrainedModel).order_by(TrainedModel.id.desc())):
            snapshot = s.get(Snapshot, m.snapshot_id) if m.snapshot_id else None
            project = s.get(Project, snapshot.project_id) if snapshot else None
            filters = ", ".join(f"{k}={v}" for k, v in (snapshot.filters or {}).items() if v) if snapshot else ""
            rows.append(ModelRow(
                id=m.id, name=m.name, kind=m.kind, base_model=m.base_model, job=m.job_id,
                project=project.name if project else None,
                labels=(snapshot.counts or {}).get("rows") if snapshot else None, filters=filters or "all labels",
                heldout_accuracy=(m.metrics or {}).get("eval/rewards/accuracies", (m.metrics or {}).get("eval/accuracy")),
                path=m.path, heldout_n=_heldout_n(m.path)))
    return rows


def _heldout_n(path: str) -> int | None:
    """How many held-out examples the run evaluated on, from the metrics.json every training run
    writes beside its adapter (alignment.training.loop.save_final); None when it is gone."""
    try:
        n = json.loads((Path(path) / "metrics.json").read_text(encoding="utf-8")).get("n_eval")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) else None


def model_config(db: Database, model_id: int) -> dict:
    """The resolved training config of the job that produced the model (its lineage, in full)."""
    with reading(db) as s:
        model = s.get(TrainedModel, model_id)
        if model is None:
            raise InputError(f"unknown model {model_id}")
        job = s.get(Job, model.job_id) if model.job_id else None
        return dict(job.config) if job else {}


@lru_cache(maxsize=2)
def _policy(base_model: str, adapter_path: str):
    from dataclasses import replace

    from peft import PeftModel

    from alignment.models import load_model
    from alignment.sampling import TransformersBackend

    loaded = load_model(base_model)
    model = PeftModel.from_pretrained(loaded.model, adapter_path).eval()
    return TransformersBackend(replace(loaded, model=model, name=f"{loaded.name}+{adapter_path}"))


def try_model(db: Database, model_id: int, prompt: str, max_new_tokens: int = 128, seed: int = 0) -> str:
    """Answer `prompt` with a policy adapter (greedy-ish sampling with a fixed seed)."""
    from alignment.sampling import SamplingParams

    prompt = (prompt or "").strip()
    if not prompt:
        raise InputError("type a prompt to try the model on")
    with transaction(db) as s:
        model = s.get(TrainedModel, model_id)
        if model is None:
            raise InputError(f"unknown model {model_id}")
        if model.kind != ModelKind.POLICY_ADAPTER:
            raise InputError(f"{model.name} is a {model.kind}: pick a policy adapter (DPO / listwise DPO) to try")
        base, path = model.base_model, model.path
    backend = _policy(base, path)
    params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed)
    return backend.sample([[{"role": "user", "content": prompt}]], 1, params)[0][0].text


# --------------------------------------------------------------------------------------------
# Evaluations (eval jobs): a tuned model against its base, judged by a reward model
# --------------------------------------------------------------------------------------------

EVALUATION_COLUMNS = ["eval", "model", "project", "prompts", "win rate vs base", "95% interval",
                      "reward base → tuned", "length base → tuned", "KL to base / token (estimate)",
                      "RM trained on held-out prompts", "RM agrees with people", "job"]


def list_evaluations(db: Database) -> list[dict]:
    """Every stored evaluation, newest first, with the names of the models it involves. The numbers
    are the stored metrics (computed by the job from its per-prompt rows), never recomputed here."""
    from storage.models import Evaluation

    rows = []
    with transaction(db) as s:
        for e in s.scalars(select(Evaluation).order_by(Evaluation.id.desc())):
            model = s.get(TrainedModel, e.model_id) if e.model_id else None
            project = s.get(Project, e.project_id) if e.project_id else None
            rows.append({"id": e.id, "model": model.name if model else (e.adapter or "?"),
                         "project": project.name if project else None, "job": e.job_id,
                         "metrics": dict(e.metrics or {}), "path": e.path})
    return rows


def _overlap(metrics: dict) -> str:
    """How many of the adapter's held-out prompts the reward model trained on ("?" when unrecorded)."""
    if "rm_train_overlap" not in metrics:
        return "–"  # stored before evaluations checked it
    return "?" if metrics["rm_train_overlap"] is None else str(metrics["rm_train_overlap"])


def _agreement(metrics: dict) -> str:
    """The reward model's agreement with held-out labels, on the pairs it did not train on."""
    if "rm_agreement_n" not in metrics:
        return "–"
    text = f"{metrics['rm_agreement']:.0%} of {metrics['rm_agreement_n']}" if metrics["rm_agreement_n"] else "none"
    if metrics.get("rm_agreement_unchecked"):
        return f"{text} (unchecked: RM split unknown)"
    excluded = metrics.get("rm_agreement_excluded", 0)
    return f"{text} ({excluded} left out: RM trained on them)" if excluded else text


def evaluation_table(rows: list[dict]) -> list[list]:
    def pct(x):
        return f"{x:.0%}" if isinstance(x, (int, float)) else "–"

    def pair(m, key, digits):
        a, b = m.get(f"{key}/base"), m.get(f"{key}/tuned")
        return f"{a:.{digits}f} → {b:.{digits}f}" if a is not None and b is not None else "–"

    table = []
    for r in rows:
        m = r["metrics"]
        table.append([r["id"], r["model"], r["project"], m.get("n"), pct(m.get("win_rate")),
                      f"{pct(m.get('win_rate_low'))} – {pct(m.get('win_rate_high'))}", pair(m, "reward", 3),
                      pair(m, "length", 1), f"{m['kl/tuned_to_base']:.4f}" if "kl/tuned_to_base" in m else "–",
                      _overlap(m), _agreement(m), r["job"]])
    return table


def evaluation_points(rows: list[dict]) -> list[dict]:
    """One point per evaluation for the win-rate plot (oldest first)."""
    return [{"evaluation": f"#{r['id']} {r['model']}", "win rate vs base": r["metrics"].get("win_rate"),
             "model": r["model"]} for r in reversed(rows) if r["metrics"].get("win_rate") is not None]
