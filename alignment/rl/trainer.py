"""The online RL part shared by GRPO and PPO, as a method of the one trainer skeleton.

:class:`OnlineRLMethod` is a :class:`alignment.training.skeleton.Method` that samples its batches
(``rollouts = True``). Through the skeleton's six steps:

1. **data**: the prompt file and its held-out split (``split.json``); then the rewards, user
   files and rules first, so a bad one fails before any model loads;
2. **model**: the LoRA policy (from ``init_adapter`` when given, a frozen copy of which is then the
   reference; otherwise the reference is the base with the adapter switched off), a sampler over
   it, the method's own parts (PPO's critic), and the held-out reward before training;
3. (no fixed reference rows: the KL term needs the reference on freshly sampled tokens);
4. **loop**: for each step's prompts the loop asks :meth:`OnlineRLMethod.rollout`, which samples
   K completions for every prompt of the step in one batched generation, rewards them, packs each
   prompt with its K completions into one row and lets the method add what its loss needs
   (:meth:`prepare`, over the whole rollout: advantages, old and reference log-probs, values). A
   rollout serves :meth:`reuse` optimizer steps in a row (GRPO's ``num_iterations``, PPO's
   ``ppo_epochs`` x ``num_mini_batches``: :meth:`minibatches` says which prompts each of those
   steps trains on); the prompts the loop offers meanwhile are skipped. Each step's prompts are
   cut into forward chunks of ``micro_batch_size`` prompts (:meth:`select` repacks a chunk with
   its rows of the prepared tensors), so memory follows the chunk, not the rollout;
5. **held-out evaluation**: the held-out reward after training, beside the one before;
6. **save**: the adapter; :meth:`save` adds the method's own files (PPO's value head).

Metrics (reward mean/std, groups without signal, lengths, timings) travel with each batch into the
step events; a few completions of each rollout with their rewards and advantages go to
``rollouts.jsonl`` (the Train tab shows the newest round's).
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.logprobs import packed_score_rows, packed_token_logps, row_token_logps, token_entropies
from alignment.models import LoadedModel
from alignment.rl.rewards import (
    RewardModelReward, WeightedReward, builtin_reward, combine_rewards, load_reward_fn,
)
from alignment.rl.rollouts import Rollout, RLPrompt, load_prompts, pack_rollout, sample_rollout, to_padded
from alignment.run_folder import read_jsonl_so_far
from alignment.sampling import SamplingParams, TransformersBackend
from alignment.training.config import OnlineRLConfig
from alignment.training.lora import TrainableModel, load_policy
from alignment.training.skeleton import Data, Method

REFERENCE_ADAPTER = "reference"
ROLLOUTS_FILE = "rollouts.jsonl"


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------

def build_rewards(config: OnlineRLConfig, device: str) -> list[WeightedReward]:
    """The weighted reward terms; files and rules are checked first, the reward model loads last."""
    rewards = [load_reward_fn(spec) for spec in config.reward_fn]
    rewards += [builtin_reward(spec) for spec in config.reward_rule]
    if config.reward_model:
        scorer = RewardModelReward(config.reward_model, device=device, max_length=config.max_length)
        rewards.append(WeightedReward(name=scorer.__name__, fn=scorer, weight=config.reward_model_weight))
    return rewards


def load_rl_policy(config: OnlineRLConfig) -> TrainableModel:
    """The LoRA policy; with ``init_adapter`` it starts from that adapter and keeps a frozen copy
    of it as the reference (otherwise the reference is the base with the adapter disabled)."""
    policy = load_policy(config, init_adapter=config.init_adapter)
    if config.init_adapter:
        policy.model.load_adapter(config.init_adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        policy.model.set_adapter("default")
    return policy


@contextmanager
def keeping_trainable(model: Any) -> Iterator[None]:
    """Which parameters train is as it was after the block. PEFT's ``set_adapter``, and leaving
    ``disable_adapter`` (which sets the active adapter again), freeze every adapter but the active
    one: PPO's critic would silently stop training after the first reference pass."""
    trainable = {p: p.requires_grad for p in model.parameters()}
    try:
        yield
    finally:
        for parameter, requires_grad in trainable.items():
            parameter.requires_grad_(requires_grad)


@contextmanager
def active_adapter(model: Any, name: str) -> Iterator[None]:
    """Compute with adapter ``name`` inside; which parameters train is left as it was."""
    previous = model.active_adapter
    with keeping_trainable(model):
        model.set_adapter(name)
        try:
            yield
        finally:
            model.set_adapter(previous)


@contextmanager
def reference_model(model: Any) -> Iterator[None]:
    """Inside, ``model`` computes as the reference: the starting adapter, or the bare base weights."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        with active_adapter(model, REFERENCE_ADAPTER):
            yield
    else:
        with keeping_trainable(model), model.disable_adapter():
            yield


def policy_backend(policy: TrainableModel, max_batch_rows: int) -> TransformersBackend:
    """The generation backend over the policy being trained (its own left-padding tokenizer copy)."""
    tokenizer = copy.copy(policy.tokenizer)
    tokenizer.padding_side = "left"
    loaded = LoadedModel(model=policy.model, tokenizer=tokenizer, spec=policy.base_location, name="policy",
                         device=policy.device)
    return TransformersBackend(loaded, max_batch_rows=max_batch_rows)


def padded_token_logps(model: Any, batch: dict[str, Tensor], entropy: bool = False
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(logps [S, T], mask [S, T], entropies [S, T] or None)`` of a packed rollout batch."""
    n = batch["last_index"].shape[0]
    rows = packed_score_rows(model, **batch)
    logps, mask = to_padded(row_token_logps(model, rows, batch["targets"]), batch["segments"], n)
    entropies = to_padded(token_entropies(model, rows.detach()), batch["segments"], n)[0] if entropy else None
    return logps, mask, entropies


def last_user_text(prompt: RLPrompt) -> str:
    users = [m["content"] for m in prompt.prompt_messages if m["role"] == "user"]
    return users[-1] if users else prompt.prompt_messages[-1]["content"]


def completion_advantages(advantages: Tensor, segments: Tensor) -> Tensor:
    """One advantage per completion: GRPO's already is; PPO's per-token ``[S, T]`` advantages
    (0 past each completion's end) are averaged over the completion's tokens."""
    if advantages.dim() == 1:
        return advantages
    lengths = torch.bincount(segments, minlength=advantages.shape[0]).clamp(min=1)
    return advantages.sum(-1) / lengths.to(advantages.device)


def rollout_table(rollout: Rollout, scores: Tensor, advantages: Tensor, limit: int) -> list[dict[str, Any]]:
    """A few completions of the rollout with their rewards and advantages, for people watching for
    reward hacking."""
    k = rollout.k
    return [{"prompt": last_user_text(rollout.prompts[i // k]), "completion": sample.text,
             "reward": round(float(scores[i]), 4), "advantage": round(float(advantages[i]), 4),
             "finish_reason": sample.finish_reason}
            for i, sample in enumerate(rollout.flat[:limit])]


def read_rollouts(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``rollouts.jsonl`` written so far."""
    return read_jsonl_so_far(Path(run_dir) / ROLLOUTS_FILE)


def latest_round(run_dir: Path) -> list[dict[str, Any]]:
    """The logged completions of the newest rollout round (every chunk sampled for one step)."""
    records = read_rollouts(run_dir)
    if not records:
        return []
    newest = records[-1].get("round")
    return [row for r in records if r.get("round") == newest for row in r["rows"]]


def reward_metrics(rollout: Rollout, scores: Tensor, per_function: dict[str, Tensor]) -> dict[str, float]:
    """Mean and std reward, the share of groups with no signal, answer lengths, each function's mean."""
    groups = scores.view(len(rollout.prompts), rollout.k)
    lengths = torch.tensor([s.num_tokens for s in rollout.flat], dtype=torch.float32)
    metrics = {
        "reward/mean": scores.mean().item(),
        "reward/std": scores.std().item() if scores.numel() > 1 else 0.0,
        "completions/mean_length": lengths.mean().item(),
        "completions/clipped_ratio": sum(s.finish_reason == "length" for s in rollout.flat) / len(rollout.flat),
    }
    if rollout.k > 1:
        metrics["reward/frac_zero_std_groups"] = (groups.max(-1).values == groups.min(-1).values).float().mean().item()
    for name, values in per_function.items():
        present = values[~values.isnan()]
        if present.numel():
            metrics[f"rewards/{name}/mean"] = present.mean().item()
    return metrics


def held_out_reward(backend: TransformersBackend, prompts: Sequence[RLPrompt], rewards: Sequence[WeightedReward],
                    config: OnlineRLConfig) -> float | None:
    """Mean total reward of ``eval_generations`` samples per held-out prompt, with a fixed seed
    (the same draws before and after training, up to what the policy changed)."""
    if not prompts:
        return None
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, seed=config.seed)
    totals = []
    for start in range(0, len(prompts), config.batch_size):
        rollout = sample_rollout(backend, prompts[start:start + config.batch_size], config.eval_generations, params)
        scores, _ = combine_rewards(rewards, *rollout.reward_inputs(), rollout=0,
                                    truncation_penalty=config.truncation_penalty)
        totals.append(scores)
    return torch.cat(totals).mean().item()


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------

class OnlineRLMethod(Method):
    """Sampling, rewarding and bookkeeping of online RL; subclasses add :meth:`prepare` and ``loss``."""

    rollouts = True
    forward = staticmethod(packed_token_logps)  # per-token log-probs, in packed order
    checkpoint_files = (ROLLOUTS_FILE,)

    def __init__(self, config: OnlineRLConfig) -> None:
        super().__init__(config)
        self.rewards: list[WeightedReward] = []
        self.backend: TransformersBackend | None = None
        self.reward_before: float | None = None
        self._rollout: Rollout | None = None  # the rollout being reused, its packed batch and
        self._batch: dict[str, Any] = {}  # prepared tensors, and the prompts each of its steps takes
        self._steps: list[list[int]] = []
        self._prepared_keys: list[str] = []  # the prepared tensors with one row per completion
        self._calls = 0
        self._generations = 0
        self._round = 0  # rollout rounds started: the chunks sampled for one step share it
        self.time_spent: dict[str, float] = {}  # seconds per "time/..." metric, summed over the run

    # -- what subclasses decide -----------------------------------------------------------------
    def reuse(self) -> int:
        """Optimizer steps each sampled chunk serves."""
        return 1

    def setup(self, policy: TrainableModel) -> None:
        """The method's own parts next to the policy (PPO: the critic)."""

    def prepare(self, rollout: Rollout, scores: Tensor, batch: dict[str, Tensor]) -> dict[str, Any]:
        """Tensors the loss needs, computed without gradients right after sampling; a
        ``"metrics"`` entry is reported with the step."""
        raise NotImplementedError

    def minibatches(self, rollout: Rollout) -> list[list[int]]:
        """The prompts (indices into ``rollout.prompts``) each step of this round trains on, in
        order, cycled through :meth:`reuse` steps (default: the whole rollout every time; PPO
        shuffles it into mini-batches)."""
        return [list(range(len(rollout.prompts)))]

    def select(self, rollout: Rollout, batch: dict[str, Any], groups: list[int]) -> dict[str, Any]:
        """The packed batch of prompts ``groups`` with their completions' rows of the prepared
        tensors (cut to the longest of those completions); the batch itself for all of them."""
        if groups == list(range(len(rollout.prompts))):
            return batch
        k, device = rollout.k, batch["last_index"].device
        completions = torch.tensor([g * k + j for g in groups for j in range(k)], device=device)
        part: dict[str, Any] = {key: t.to(device) for key, t in
                                pack_rollout(rollout, self.tokenizer.pad_token_id, groups).items()}
        width = int(torch.bincount(part["segments"]).max())
        for key in self._prepared_keys:
            rows = batch[key][completions]
            part[key] = rows[:, :width] if rows.dim() == 2 else rows
        part.update(rollout_metrics=batch["rollout_metrics"], prompt_index=list(groups))
        return part

    # (1) and (2) -------------------------------------------------------------------------------
    def load_data(self) -> Data:
        if not self.config.resume_from:
            (self.run_dir / ROLLOUTS_FILE).unlink(missing_ok=True)
        logged = read_rollouts(self.run_dir)  # a resumed run numbers its rounds on
        self._round = logged[-1].get("round", 0) if logged else 0
        data = self.split(load_prompts(self.config.data))
        self.rewards = build_rewards(self.config, self.config.resolved_device())
        return data

    def load_model(self) -> TrainableModel:
        policy = self.trainable = load_rl_policy(self.config)
        self.backend = policy_backend(policy, max_batch_rows=max(
            self.config.batch_size * self.config.num_generations, self.config.eval_generations))
        self.setup(policy)
        self.reward_before = held_out_reward(self.backend, self.data.held_out, self.rewards, self.config)
        return policy

    # (4) ----------------------------------------------------------------------------------------
    def rollout(self, model: Any, indices: list[int], forward_size: int) -> list[tuple[dict[str, Any], float]]:
        """This step's forward chunks: from a fresh rollout of the prompts at ``indices``, or from
        the rollout being reused (see the module docstring)."""
        position = self._calls % self.reuse()
        self._calls += 1
        if position == 0 or self._rollout is None:
            self._round += 1
            self._rollout, self._batch = self._sample(model, [self.data.train[i] for i in indices])
            self._steps = self.minibatches(self._rollout)
        groups = self._steps[position % len(self._steps)]
        chunks = [groups[start:start + forward_size] for start in range(0, len(groups), forward_size)]
        return [(self.select(self._rollout, self._batch, chunk), len(chunk) / len(groups)) for chunk in chunks]

    def _sample(self, model: Any, prompts: list[RLPrompt]) -> tuple[Rollout, dict[str, Any]]:
        config = self.config
        started = time.monotonic()
        params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                                max_new_tokens=config.max_new_tokens,
                                seed=config.seed * 1_000_003 + self._generations)
        self._generations += 1
        rollout = sample_rollout(self.backend, prompts, config.num_generations, params)
        sampled = time.monotonic()
        scores, per_function = combine_rewards(self.rewards, *rollout.reward_inputs(), rollout=self._generations,
                                               truncation_penalty=config.truncation_penalty)
        rewarded = time.monotonic()
        device = self.trainable.device
        batch: dict[str, Any] = {k: t.to(device) for k, t in pack_rollout(rollout, self.tokenizer.pad_token_id).items()}
        prepared = self.prepare(rollout, scores.to(device), batch)
        self._prepared_keys = [key for key, value in prepared.items() if isinstance(value, Tensor)]
        metrics = {**reward_metrics(rollout, scores, per_function), **prepared.pop("metrics", {}),
                   "time/generation_s": sampled - started, "time/reward_s": rewarded - sampled,
                   "time/prepare_s": time.monotonic() - rewarded,
                   "rollouts_per_s": len(rollout.flat) / max(time.monotonic() - started, 1e-9)}
        for name, seconds in metrics.items():
            if name.startswith("time/"):
                self.time_spent[name] = self.time_spent.get(name, 0.0) + seconds
        self._log(rollout, scores, completion_advantages(prepared["advantages"].detach().cpu(),
                                                         batch["segments"].cpu()))
        batch.update(prepared, rollout_metrics=metrics, prompt_index=list(range(len(prompts))))
        return rollout, batch

    def _log(self, rollout: Rollout, scores: Tensor, advantages: Tensor) -> None:
        if self.config.rollouts_shown:
            record = {"round": self._round, "rollout": self._generations,
                      "rows": rollout_table(rollout, scores, advantages, self.config.rollouts_shown)}
            with (self.run_dir / ROLLOUTS_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    # (5) and (6) -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        after = held_out_reward(self.backend, self.data.held_out, self.rewards, self.config)
        if after is None:
            return {}
        return {"reward_before": self.reward_before, "reward_after": after, "n": len(self.data.held_out)}
