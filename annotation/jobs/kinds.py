"""The kinds of job the runner knows: config class, the function the worker runs, the input frozen at
submit and what a finished job leaves behind. One table, so the UI form, the CLI and the worker agree.

Each kind has hooks for the runner: ``check`` refuses, at submit, settings the project cannot take;
``summarize`` turns what ``run`` returned into the JSON the worker saves (``result.json``); ``record``
writes what a succeeded job produced into the database, in the transaction that marks it succeeded.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignment.rl.grpo import train_grpo
from alignment.rl.ppo import train_ppo
from alignment.rl.rewards import RewardError
from alignment.run_folder import ModelKind
from alignment.training import preflight
from alignment.training.config import DPOConfig, GRPOConfig, PLDPOConfig, PPOConfig, RewardConfig
from alignment.training.dpo import train_dpo
from alignment.training.pl_dpo import train_pl_dpo
from alignment.training.reward import train_reward_model
from annotation.jobs import best_of_n, evaluation
from storage.errors import InputError
from storage.models import Job, TrainedModel

#: What a job produces: trained models are registered (with their lineage); a dataset is a file.
MODEL_OUTPUTS = tuple(ModelKind)


def training_summary(result) -> dict[str, Any]:
    return {"output": str(result.out_dir), "out_dir": str(result.out_dir), "steps": result.steps,
            "metrics": result.metrics, "eval_metrics": result.eval_metrics}


def register_trained_model(session, job: Job, summary: dict[str, Any]) -> str:
    """The model a training job produced, with its lineage (job, label snapshot) and metrics."""
    metrics = {**(summary.get("metrics") or {}),
               **{f"eval/{k}": v for k, v in (summary.get("eval_metrics") or {}).items()}}
    name = f"{job.kind}-job{job.id}"
    session.add(TrainedModel(name=name, kind=JOB_KINDS[job.kind].produces, path=summary["out_dir"],
                             base_model=job.config.get("model", "default"), job_id=job.id,
                             snapshot_id=job.snapshot_id, metrics=metrics))
    return f"registered model {name}"


def check_rewards(project: Any, config: Any) -> None:
    """Online RL, before launch: every reward function file imports and names a callable, every
    built-in rule parses (the reward model folder is checked by the config itself)."""
    try:
        preflight.check_rewards(config)
    except RewardError as exc:
        raise InputError(str(exc)) from None


@dataclass(frozen=True)
class JobKind:
    name: str
    title: str
    config_class: type
    run: Callable  # run(config, callbacks=[...]) in the job subprocess
    # input frozen at submit: "pairs" | "rankings" (storage.snapshots.SNAPSHOT_KINDS) | "prompts" | "eval"
    snapshot: str
    produces: str  # a ModelKind | "dataset" | "evaluation"
    summarize: Callable[[Any], dict] = training_summary
    record: Callable[[Any, Job, dict], str | None] = register_trained_model
    check: Callable[[Any, Any], None] | None = None  # check(project, config), raises InputError
    # freeze(session, project, out_dir, values) -> (snapshot, extra config values): the kind's own input
    freeze: Callable[..., tuple[Any, dict]] | None = None
    unit: str = "step"  # what the progress counts

    @property
    def trains(self) -> bool:
        return self.produces in MODEL_OUTPUTS


JOB_KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("rm", "Reward model (Bradley-Terry, LoRA)", RewardConfig, train_reward_model, "pairs", ModelKind.REWARD_MODEL),
    JobKind("dpo", "DPO (LoRA)", DPOConfig, train_dpo, "pairs", ModelKind.POLICY_ADAPTER),
    JobKind("pl-dpo", "Listwise DPO (Plackett-Luce, LoRA)", PLDPOConfig, train_pl_dpo, "rankings", ModelKind.POLICY_ADAPTER),
    JobKind("grpo", "GRPO: K answers per prompt, each judged against the others (LoRA)", GRPOConfig, train_grpo,
            "prompts", ModelKind.POLICY_ADAPTER, check=check_rewards),
    JobKind("ppo", "PPO from a reward: LoRA actor and critic, GAE, KL to the reference", PPOConfig, train_ppo,
            "prompts", ModelKind.POLICY_ADAPTER, check=check_rewards),
    JobKind("bon", "Best-of-N dataset (reward model picks the best of N)", best_of_n.BestOfNJobConfig,
            best_of_n.run, "prompts", "dataset", summarize=dict, record=best_of_n.record, check=best_of_n.check,
            unit="prompt"),
    JobKind("eval", "Evaluation: tuned vs base on held-out prompts (reward model as judge)",
            evaluation.EvalJobConfig, evaluation.run, "eval", "evaluation", summarize=dict, record=evaluation.record,
            freeze=evaluation.freeze, unit="prompt"),
)}
