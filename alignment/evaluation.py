"""Evaluating a tuned adapter against its base model on held-out prompts, with a reward model as judge.

This module owns

* the evaluation itself; its settings, :class:`EvalConfig`, live in :mod:`alignment.run_configs`
  (light, for the command line);
* :func:`held_out_pairs`: the preference pairs an adapter's training run held out, as its run
  folder recorded them (``split.json``, :mod:`alignment.training.heldout`): never split again;
* :func:`held_out_prompts`: the prompts it held out (a PPO / GRPO run has prompts but no pairs);
* :func:`rm_overlap`: how many of the adapter's held-out prompts the reward model trained on
  (from both runs' ``split.json``);
* :func:`evaluate_against_base`: for each prompt the base model and the tuned model answer with
  the same sampling settings and seed; the reward model scores both answers; the per-token KL of
  the tuned answer to the base is estimated from that sampled answer; the reward model's
  agreement with held-out human labels is measured on the pairs whose prompts it did not train on;
* :func:`summarize_rows`: the metrics, computed from the per-prompt rows (the stored scores) and
  nothing else, so what the UI shows can always be traced back to the rows file.

Win rate by reward model: a prompt is won when the tuned answer scores higher, lost when lower,
half when equal; the interval is a percentile bootstrap over prompts (Efron & Tibshirani 1993).
Pure computation: no database; the only files read are the model folders (with their
``split.json``) and the adapter's training data.
"""
from __future__ import annotations

import json
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.chat import Messages, validate_messages
from alignment.run_configs import EvalConfig
from alignment.run_folder import TRAINING_CONFIG, read_json
from alignment.sampling import SamplingParams
from alignment.training.data import PreferencePair, load_pairs, load_rankings, prompt_sha256, ranking_pairs
from alignment.training.heldout import SplitRecord, held_out_items, read_split

log = logging.getLogger(__name__)

#: Methods trained from a reward on prompts: their held-out split holds prompts, no preference pairs.
ONLINE_RL_METHODS = ("grpo", "ppo")
BOOTSTRAP_SAMPLES = 1000




# --------------------------------------------------------------------------------------------
# Held-out data of an adapter's training run
# --------------------------------------------------------------------------------------------

def held_out_pairs(adapter: str | Path) -> list[PreferencePair]:
    """The pairs the adapter's training run held out: the rows of its training data whose prompts
    its ``split.json`` lists as held out (a listwise run's rankings as their ordered pairs).

    Raises ValueError when the adapter has no ``split.json`` (trained before runs recorded it) or
    no training config, or its training data file is gone.
    """
    record, data, method = _training_data(adapter)
    if method == "pl_dpo":
        pairs = ranking_pairs(held_out_items(load_rankings(data).rankings, record))
    elif method in ("dpo", "reward"):
        pairs = held_out_items(load_pairs(data), record)
    else:
        raise ValueError(f"{adapter} was trained with {method!r}, which records no preference data; "
                         f"give a prompt file")
    return pairs


def held_out_prompts(adapter: str | Path) -> list[Messages]:
    """The prompts the adapter's training run held out, each once: a preference run's from its
    held-out pairs; a PPO / GRPO run's from its prompt file (it has no pairs: it learned from a
    reward on prompts alone). Raises ValueError as :func:`held_out_pairs` does."""
    from alignment.rl.rollouts import load_prompts

    record, data, method = _training_data(adapter)
    if method in ONLINE_RL_METHODS:
        return [p.prompt_messages for p in held_out_items(load_prompts(data), record)]
    return distinct_prompts(held_out_pairs(adapter))


def _training_data(adapter: str | Path) -> tuple[SplitRecord, str, str | None]:
    """The adapter's recorded split, its training data file and its method; ValueError when missing."""
    record = read_split(adapter)
    config = read_json(Path(adapter) / TRAINING_CONFIG)
    data, method = config.get("data"), config.get("method")
    if not data or not Path(data).is_file():
        raise ValueError(f"the training data of {adapter} is not available ({data!r}); give a prompt file")
    return record, data, method


def rm_training_prompts(reward: str | Path) -> frozenset[str] | None:
    """Content hashes of the prompts the reward model trained on; None when it recorded no split."""
    try:
        return read_split(reward).train_prompts
    except ValueError:
        return None


def rm_overlap(adapter: str | Path, reward: str | Path) -> int | None:
    """How many of the adapter's held-out prompts the reward model trained on (None: unknown,
    one of the two runs has no ``split.json``)."""
    rm_trained = rm_training_prompts(reward)
    try:
        held_out = read_split(adapter).held_out_prompts
    except ValueError:
        return None
    return None if rm_trained is None else len(held_out & rm_trained)


def distinct_prompts(pairs: Sequence[PreferencePair]) -> list[Messages]:
    """The pairs' prompts, each once, in order."""
    seen, prompts = set(), []
    for pair in pairs:
        key = json.dumps(pair.prompt_messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(pair.prompt_messages)
    return prompts


# --------------------------------------------------------------------------------------------
# Metrics from rows
# --------------------------------------------------------------------------------------------

def outcome(tuned_score: float, base_score: float) -> float:
    """1 when the tuned answer scores higher, 0 when lower, 0.5 when equal."""
    return 1.0 if tuned_score > base_score else 0.0 if tuned_score < base_score else 0.5


def bootstrap_interval(values: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    if not values:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(samples))
    lo = means[int((1 - level) / 2 * (samples - 1))]
    hi = means[int((1 + level) / 2 * (samples - 1))]
    return (lo, hi)


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Win rate vs base by reward model (with a 95% bootstrap interval), mean reward, length and KL."""
    if not rows:
        raise ValueError("no evaluated prompts")
    wins = [outcome(r["tuned_score"], r["base_score"]) for r in rows]
    low, high = bootstrap_interval(wins)
    return {
        "n": len(rows),
        "win_rate": statistics.fmean(wins),
        "win_rate_low": low,
        "win_rate_high": high,
        "reward/base": statistics.fmean(r["base_score"] for r in rows),
        "reward/tuned": statistics.fmean(r["tuned_score"] for r in rows),
        "length/base": statistics.fmean(r["base_tokens"] for r in rows),
        "length/tuned": statistics.fmean(r["tuned_tokens"] for r in rows),
        "kl/tuned_to_base": statistics.fmean(r["kl"] for r in rows),
    }


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    seconds: float
    params: SamplingParams  # what both models sampled with (the KL estimate depends on it)


def reward_agreement(reward_model: Any, tokenizer: Any, pairs: Sequence[PreferencePair],
                     rm_trained_on: frozenset[str] | None, batch_size: int = 8) -> dict[str, float]:
    """How often the reward model scores the human-chosen response above the rejected one.

    Only on pairs whose prompt the reward model did not train on (``rm_trained_on``: content
    hashes from its ``split.json``); ``rm_agreement_excluded`` counts the pairs left out. With
    ``rm_trained_on`` None (the reward model recorded no split) every pair counts, and
    ``rm_agreement_unchecked`` says the number may include pairs it trained on.
    """
    from alignment.training.reward import score

    if not pairs:
        return {}
    fresh = [p for p in pairs if rm_trained_on is None or prompt_sha256(p) not in rm_trained_on]
    counts = {"rm_agreement_excluded": len(pairs) - len(fresh)}
    if rm_trained_on is None:
        counts["rm_agreement_unchecked"] = True
    if not fresh:
        return {**counts, "rm_agreement_n": 0}
    prompts = [p.prompt_messages for p in fresh]
    chosen = score(reward_model, tokenizer, prompts, [p.chosen for p in fresh], batch_size=batch_size)
    rejected = score(reward_model, tokenizer, prompts, [p.rejected for p in fresh], batch_size=batch_size)
    agree = [1.0 if c > r else 0.0 for c, r in zip(chosen, rejected)]
    return {"rm_agreement": statistics.fmean(agree), "rm_agreement_n": len(agree), **counts}


def kl_estimate_text(kl: float, n_samples: int, params: SamplingParams) -> str:
    """The KL figure with what it was measured under: it is estimated from sampled answers."""
    answers = "1 sampled answer" if n_samples == 1 else f"{n_samples} sampled answers (one per prompt)"
    return f"KL to base ≈ {kl:.4f} nats/token, a k3 estimate from {answers} at {params.describe()}"


def overlap_text(metrics: dict[str, Any]) -> str:
    """Whether the reward model trained on the adapter's held-out prompts, in words."""
    overlap = metrics.get("rm_train_overlap")
    if overlap is None:
        return ("overlap of the reward model's training prompts with the adapter's held-out prompts: unknown "
                "(one of them has no split.json)")
    return f"the reward model trained on {overlap} of the adapter's held-out prompts"


def agreement_text(metrics: dict[str, Any]) -> str:
    """The reward model's agreement with held-out human labels, with what was left out and why."""
    excluded = metrics.get("rm_agreement_excluded", 0)
    if metrics.get("rm_agreement_unchecked"):
        caveat = " (unchecked: the reward model has no split.json, some of these may be pairs it trained on)"
    elif excluded:
        caveat = f" ({excluded} pair(s) left out: the reward model trained on their prompts)"
    else:
        caveat = ""
    if not metrics.get("rm_agreement_n"):
        return f"reward model agreement with held-out human labels: no pair to measure it on{caveat}"
    return (f"reward model agrees with held-out human labels on {metrics['rm_agreement']:.1%} of "
            f"{metrics['rm_agreement_n']} pairs{caveat}")


def evaluate_against_base(config: EvalConfig, prompts: Sequence[Messages],
                          human_pairs: Sequence[PreferencePair] = (),
                          progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Base and tuned answers for every prompt, scored, with the KL estimate; see the module docstring.

    Each prompt is one side-by-side comparison (:func:`alignment.compare.answer_side_by_side`):
    one copy of the base weights with the adapter attached answers as both models in one batch,
    with the same seed (prompt ``i`` uses ``seed + i``) and common random numbers, so the two
    answers differ because the models do, not because the dice did.
    """
    from alignment.compare import ModelRef, answer_side_by_side
    from alignment.training.reward import load_reward_model

    for index, messages in enumerate(prompts):
        try:
            validate_messages(messages)
        except ValueError as exc:
            raise ValueError(f"prompt {index + 1}: {exc}") from None
    if not prompts:
        raise ValueError("no prompts to evaluate")
    started = time.monotonic()
    device = config.resolved_device()
    base_spec = config.base_spec()
    refs = [ModelRef(model=base_spec, label="base"), ModelRef(model=base_spec, adapter=config.adapter, label="tuned")]
    reward = load_reward_model(config.reward, device=device)
    params = config.sampling_params()

    rows: list[dict[str, Any]] = []
    if progress:
        progress(0, len(prompts))
    for index, messages in enumerate(prompts):
        base, tuned = answer_side_by_side(refs, messages, params, seed=config.seed + index, reward=reward,
                                          device=device)
        rows.append({
            "prompt": messages, "seed": base.seed,
            "base": base.text, "tuned": tuned.text,
            "base_tokens": base.num_tokens, "tuned_tokens": tuned.num_tokens,
            "base_score": float(base.rm_score), "tuned_score": float(tuned.rm_score),
            "kl": float(tuned.kl_to_base),
        })
        if progress:
            progress(len(rows), len(prompts))

    metrics = summarize_rows(rows)
    metrics["rm_train_overlap"] = rm_overlap(config.adapter, config.reward)
    metrics.update(reward_agreement(reward.model, reward.tokenizer, human_pairs,
                                    rm_training_prompts(config.reward), config.batch_size))
    return EvalResult(rows=rows, metrics=metrics, seconds=time.monotonic() - started, params=params)


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON row per prompt, written beside and renamed so a killed job leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
