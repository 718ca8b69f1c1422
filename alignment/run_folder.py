"""The run-folder contract: what a training run leaves in its folder, and which kinds of model it makes.

This module owns

* the names of a run folder's files (the saved config, PEFT's adapter files, metrics, progress,
  checkpoints and what each checkpoint holds), so a trainer that writes them and a reader that
  looks for them (evaluation, best-of-N, comparison, the job runner) cannot drift apart;
* :class:`ModelKind`: what a finished training run is, a policy adapter or a reward model (its
  values are the strings stored in the database's ``trained_models.kind``: keep them);
* :func:`read_json` and :func:`saved_training_config`: reading those files with a clear error.
* :func:`read_jsonl_so_far`: the lines of a log a running job is still appending to.

A run folder, as the trainers leave it::

    out/
      training_config.json      the resolved config (alignment.training.config)
      adapter_config.json       PEFT's adapter config (base_model_name_or_path, task_type)
      adapter_model.safetensors the LoRA (and score head) weights
      tokenizer.json, ...       the tokenizer
      metrics.json              final train / held-out metrics
      progress.jsonl            one JSON event per line while it trains
      rollouts.jsonl            PPO / GRPO: a few sampled answers of each rollout, rewards, advantages
      reference_logps.pt        DPO / PL-DPO's cached reference log-probs
      split.json                content hashes of the prompts trained on and held out
      checkpoint-<step>/        resumable state (trainer_state.json written last)

Pure names and JSON reading: no torch, no PEFT.
"""
from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

TRAINING_CONFIG = "training_config.json"
ADAPTER_CONFIG = "adapter_config.json"
#: PEFT's adapter weights, in the order PEFT looks for them.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
METRICS_FILE = "metrics.json"
PROGRESS_FILE = "progress.jsonl"
REFERENCE_FILE = "reference_logps.pt"
SPLIT_FILE = "split.json"

CHECKPOINT_PREFIX = "checkpoint-"
#: Written last into a checkpoint: a checkpoint folder without it is incomplete.
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pt"


class ModelKind(StrEnum):
    """What a training run produces. A ``str``: members compare equal to, and are stored as, their values."""

    POLICY_ADAPTER = "policy-adapter"  # a LoRA adapter of a causal LM (DPO, PL-DPO)
    REWARD_MODEL = "reward-model"  # a sequence-classification LoRA adapter with a score head


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"{CHECKPOINT_PREFIX}{step}"


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON file's content, or ValueError naming the file and why it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None


def read_jsonl_so_far(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL log written so far (a line being written is skipped, not an error)."""
    path = Path(path)
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def saved_training_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's saved ``training_config.json`` as a dict, None when the folder has none."""
    path = Path(run_dir) / TRAINING_CONFIG
    return read_json(path) if path.is_file() else None


def recorded_base_model(run_dir: str | Path) -> str | None:
    """``base_model_name_or_path`` from the folder's ``adapter_config.json`` (None when absent)."""
    path = Path(run_dir) / ADAPTER_CONFIG
    recorded = read_json(path).get("base_model_name_or_path") if path.is_file() else None
    return recorded if isinstance(recorded, str) and recorded else None
