"""The online RL loop shared by GRPO and PPO: sample, score, update, report.

:func:`train_online` reads top to bottom: (1) prompts and their held-out split, (2) the rewards
(user code is imported and checked before any model loads), (3) the policy with LoRA and its
reference, (4) the method's own parts (PPO's critic), optimizer and schedule, (5) the held-out
reward before training, (6) the loop, one step per rollout: sample K completions per prompt,
reward them, let the method update, report, checkpoint; (7) the held-out reward after training,
(8) saving.

A method plugs in an :class:`Algorithm`: its extra parameters, and ``update(rollout, scores)``,
which does its optimizer steps through the ``optimizer_step`` it is given and returns metrics.
The loop knows nothing of advantages or losses.

Runs on one device (no ``accelerate launch`` sharding of rollouts yet).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from alignment.models import LoadedModel
from alignment.rl.rewards import (
    RewardModelReward, WeightedReward, builtin_reward, combine_rewards, load_reward_fn,
)
from alignment.rl.rollouts import Rollout, RLPrompt, load_prompts, sample_rollout
from alignment.sampling import SamplingParams, TransformersBackend
from alignment.training.callbacks import ProgressFile, as_callbacks, emit, eta_seconds
from alignment.training.config import OnlineRLConfig
from alignment.training.data import split
from alignment.training.lora import TrainableModel, load_policy
from alignment.training.loop import (
    OPTIMIZER_FILE, PROGRESS_FILE, SCHEDULER_FILE, TrainResult, checkpoint_dir, load_checkpoint_state, lr_lambda,
    prepare_run_dir, restore_adapter, save_checkpoint, save_final,
)

REFERENCE_ADAPTER = "reference"
SPLIT_FILE = "prompt_split.json"


class Algorithm(Protocol):
    """A method's part of the online loop (GRPO, PPO)."""

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters beyond the policy's LoRA (PPO: the critic's)."""

    def update(self, rollout: Rollout, scores: torch.Tensor, optimizer_step: Callable[[], None],
               forward_prompts: int) -> dict[str, float]:
        """Learn from one rollout (``scores``: one total reward per completion), running forward
        passes of ``forward_prompts`` prompts with their completions; metrics to report."""

    def save(self, path: Path) -> None:
        """Write the method's own state (e.g. the critic) into a checkpoint or the run folder."""

    def restore(self, path: Path) -> None:
        """Read back what :meth:`save` wrote."""


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
def reference_model(model: Any) -> Iterator[None]:
    """Inside, ``model`` computes as the reference: the starting adapter, or the bare base weights."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            model.set_adapter("default")
    else:
        with model.disable_adapter():
            yield


def policy_backend(policy: TrainableModel, max_batch_rows: int) -> TransformersBackend:
    """The generation backend over the policy being trained (its own left-padding tokenizer copy)."""
    import copy

    tokenizer = copy.copy(policy.tokenizer)
    tokenizer.padding_side = "left"
    loaded = LoadedModel(model=policy.model, tokenizer=tokenizer, spec=policy.base_location, name="policy",
                         device=policy.device)
    return TransformersBackend(loaded, max_batch_rows=max_batch_rows)


def prompts_for_step(prompts: Sequence[RLPrompt], per_step: int, step: int, seed: int) -> list[RLPrompt]:
    """The prompts of ``step``: consecutive slices of seeded shuffles, one shuffle per pass, so a
    resumed run draws the same prompts (a pure function of step and seed)."""
    n = len(prompts)
    out = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, index = divmod(position, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(prompts[int(order[index])])
    return out


def write_split(run_dir: Path, train: Sequence[RLPrompt], held_out: Sequence[RLPrompt], config: Any) -> None:
    """Which prompts were held out (their messages), so the numbers can be checked later."""
    record = {"eval_fraction": config.eval_fraction, "seed": config.seed, "n_train": len(train),
              "held_out": [p.prompt_messages for p in held_out]}
    (run_dir / SPLIT_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def last_user_text(prompt: RLPrompt) -> str:
    users = [m["content"] for m in prompt.prompt_messages if m["role"] == "user"]
    return users[-1] if users else prompt.prompt_messages[-1]["content"]


def rollout_table(rollout: Rollout, scores: torch.Tensor, limit: int) -> list[dict[str, Any]]:
    """A few completions of the rollout with their rewards, for people watching for reward hacking."""
    k = rollout.k
    return [{"prompt": last_user_text(rollout.prompts[i // k]), "completion": sample.text,
             "reward": round(float(scores[i]), 4), "finish_reason": sample.finish_reason}
            for i, sample in enumerate(rollout.flat[:limit])]


def reward_metrics(rollout: Rollout, scores: torch.Tensor, per_function: dict[str, torch.Tensor]) -> dict[str, float]:
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
                    config: OnlineRLConfig, batch_prompts: int) -> float | None:
    """Mean total reward of ``eval_generations`` samples per held-out prompt, with a fixed seed
    (the same draws before and after training, up to what the policy changed)."""
    if not prompts:
        return None
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, seed=config.seed)
    totals = []
    for start in range(0, len(prompts), batch_prompts):
        rollout = sample_rollout(backend, prompts[start:start + batch_prompts], config.eval_generations, params)
        scores, _ = combine_rewards(rewards, *rollout.reward_inputs(), rollout=0,
                                    truncation_penalty=config.truncation_penalty)
        totals.append(scores)
    return torch.cat(totals).mean().item()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def train_online(config: OnlineRLConfig, make_algorithm: Callable[[OnlineRLConfig, TrainableModel, list], Algorithm],
                 callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train ``config``'s policy online with the method ``make_algorithm`` builds (see the module docstring)."""
    started = time.monotonic()
    run_dir = prepare_run_dir(config)
    callbacks = [ProgressFile(run_dir / PROGRESS_FILE), *as_callbacks(callbacks)]
    method = config.method

    # (1) Prompts, and the held-out ones that measure the reward before and after.
    prompts = load_prompts(config.data)
    train, held_out = split(prompts, config.eval_fraction, config.seed)
    write_split(run_dir, train, held_out, config)

    # (2) Rewards: user files and rules first (a bad one fails before any model loads).
    device = config.resolved_device()
    rewards = build_rewards(config, device)

    # (3) Policy (LoRA) and its sampler; the reference is the adapter switched off or the start adapter.
    policy = load_rl_policy(config)
    model = policy.model
    # micro_batch_size counts completions; a forward pass holds whole prompts with their K completions
    forward_prompts = max(1, config.resolved_micro_batch_size() // config.num_generations)
    backend = policy_backend(policy, max_batch_rows=max(config.batch_size, config.eval_generations))

    # (4) The method's parts, one optimizer over everything trainable, a schedule per rollout.
    algorithm = make_algorithm(config, policy, rewards)
    parameters = list({id(p): p for p in [*(p for p in model.parameters() if p.requires_grad),
                                          *algorithm.parameters()]}.values())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(train) / config.prompts_per_step())
    total = config.max_steps if config.max_steps is not None else config.epochs * per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.lr_schedule, config.warmup_steps, total))

    def optimizer_step() -> None:
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step = 0
    if config.resume_from:
        resume = Path(config.resume_from)
        step = int(load_checkpoint_state(resume)["step"])
        restore_adapter(model, resume)
        algorithm.restore(resume)
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
        scheduler.load_state_dict(torch.load(resume / SCHEDULER_FILE, weights_only=True))
    start_step = step

    def report(event: str, **extra: Any) -> None:
        elapsed = time.monotonic() - started
        emit(callbacks, event, {"method": method, "step": step, "total_steps": total, "elapsed_s": round(elapsed, 3),
                                "eta_s": eta_seconds(step, total, elapsed, start_step), **extra})

    # (5) The held-out reward before training (the bar the run has to clear).
    eval_batch = max(1, config.prompts_per_step())
    reward_before = held_out_reward(backend, held_out, rewards, config, eval_batch) if not config.resume_from else None
    report("train_begin", loss=None, metrics={}, n_train=len(train), n_eval=len(held_out),
           resumed_from=config.resume_from, reward_before=reward_before,
           reference="init_adapter" if config.init_adapter else "base")

    # (6) One step per rollout.
    metrics: dict[str, float] = {}
    model.train()
    while step < total:
        step_started = time.monotonic()
        batch_prompts = prompts_for_step(train, config.prompts_per_step(), step, config.seed)
        params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                                max_new_tokens=config.max_new_tokens, seed=config.seed * 1_000_003 + step)
        rollout = sample_rollout(backend, batch_prompts, config.num_generations, params)
        generated = time.monotonic()
        scores, per_function = combine_rewards(rewards, *rollout.reward_inputs(), rollout=step + 1,
                                               truncation_penalty=config.truncation_penalty)
        scored = time.monotonic()
        metrics = algorithm.update(rollout, scores, optimizer_step, forward_prompts)
        scheduler.step()
        step += 1
        elapsed = time.monotonic() - step_started
        metrics.update(reward_metrics(rollout, scores, per_function))
        metrics.update({"time/generation_s": generated - step_started, "time/reward_s": scored - generated,
                        "time/update_s": time.monotonic() - scored,
                        "rollouts_per_s": len(rollout.flat) / max(elapsed, 1e-9)})
        if step % config.logging_steps == 0 or step == total:
            report("step", loss=metrics.get("loss"), metrics=metrics, lr=scheduler.get_last_lr()[0],
                   rollouts=rollout_table(rollout, scores, config.rollouts_shown))
        if config.save_steps and step % config.save_steps == 0 and step < total:
            path = save_checkpoint(run_dir, step, model, optimizer, scheduler, [SPLIT_FILE],
                                   {"method": method, "total_steps": total, "seed": config.seed})
            algorithm.save(path)
            report("save", loss=metrics.get("loss"), metrics=metrics, path=str(path), kind="checkpoint")

    # (7) The held-out reward after training.
    eval_metrics: dict[str, float] = {}
    reward_after = held_out_reward(backend, held_out, rewards, config, eval_batch)
    if reward_after is not None:
        eval_metrics = {"reward_after": reward_after, "n": len(held_out)}
        if reward_before is not None:
            eval_metrics["reward_before"] = reward_before
        report("eval", loss=None, metrics=eval_metrics)

    # (8) Save: the policy adapter (standard PEFT folder), tokenizer, config, metrics; the method's state.
    if REFERENCE_ADAPTER in model.peft_config:
        model.delete_adapter(REFERENCE_ADAPTER)  # a copy of init_adapter: nothing to save
    model.set_adapter("default")
    save_final(run_dir, model, policy.tokenizer, config, step, metrics, eval_metrics,
               {"n_train": len(train), "n_eval": len(held_out), "rewards": [r.name for r in rewards]})
    algorithm.save(run_dir)
    report("save", loss=metrics.get("loss"), metrics=metrics, path=str(run_dir), kind="final")
    report("train_end", loss=metrics.get("loss"), metrics=metrics, eval_metrics=eval_metrics)
    return TrainResult(out_dir=run_dir, steps=step, metrics=metrics, eval_metrics=eval_metrics)
