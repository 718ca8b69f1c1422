"""The kinds of job the runner knows: config class, training function, the snapshot it reads and
the artifact it produces. One table, so the UI form, the CLI and the worker agree."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alignment.training.config import DPOConfig, PLDPOConfig, RewardConfig
from alignment.training.dpo import train_dpo
from alignment.training.pl_dpo import train_pl_dpo
from alignment.training.reward import train_reward_model


@dataclass(frozen=True)
class JobKind:
    name: str
    title: str
    config_class: type
    train: Callable
    snapshot: str  # "pairs" | "rankings" (storage.snapshots.SNAPSHOT_KINDS)
    produces: str  # "policy-adapter" | "reward-model"


JOB_KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("rm", "Reward model (Bradley-Terry, LoRA)", RewardConfig, train_reward_model, "pairs", "reward-model"),
    JobKind("dpo", "DPO (LoRA)", DPOConfig, train_dpo, "pairs", "policy-adapter"),
    JobKind("pl-dpo", "Listwise DPO (Plackett-Luce, LoRA)", PLDPOConfig, train_pl_dpo, "rankings", "policy-adapter"),
)}
