"""GRPO (Shao et al. 2024, DeepSeekMath, eq. 3) with LoRA, and its siblings Dr. GRPO and RLOO.

Per rollout of K completions for each of G prompts:

1. advantages from the group (:func:`alignment.rl.advantages.group_advantages`): every token of
   completion ``i`` gets ``Â_i``;
2. without gradients: the reference's log-probs (only when ``beta > 0``) and, when the rollout is
   reused (``num_iterations > 1``), the sampling policy's own ("old") log-probs;
3. ``num_iterations`` optimizer steps, each over the whole rollout in forward passes of a few
   prompts (each prompt and its K completions one packed row, the prompt computed once):

       L_t = −min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â) + β · k3_t

   aggregated per sequence, per token or by a constant (:func:`alignment.rl.losses.aggregate`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alignment.logprobs import packed_score_rows, row_token_logps, token_entropies
from alignment.rl.advantages import group_advantages, masked_mean
from alignment.rl.kl import approx_kl, k3
from alignment.rl.losses import aggregate, clipped_surrogate
from alignment.rl.rollouts import Rollout, pack_rollout, to_padded
from alignment.rl.trainer import reference_model, train_online
from alignment.training.config import GRPOConfig
from alignment.training.loop import TrainResult

__all__ = ["GRPO", "train_grpo"]


def chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(start, min(n, start + size))) for start in range(0, n, size)]


def padded_token_logps(model: Any, batch: dict[str, Tensor], n_completions: int,
                       entropy: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(logps [S, T], mask [S, T], entropies [S, T] or None)`` of a packed rollout batch."""
    rows = packed_score_rows(model, **batch)
    logps, mask = to_padded(row_token_logps(model, rows, batch["targets"]), batch["segments"], n_completions)
    entropies = to_padded(token_entropies(model, rows.detach()), batch["segments"], n_completions)[0] \
        if entropy else None
    return logps, mask, entropies


class GRPO:
    """The GRPO update (see the module docstring); no parameters beyond the policy's LoRA."""

    def __init__(self, config: GRPOConfig, model: Any, pad_id: int, device: str) -> None:
        self.config = config
        self.model = model
        self.pad_id = pad_id
        self.device = device

    def parameters(self) -> list[nn.Parameter]:
        return []

    def save(self, path: Path) -> None:
        pass

    def restore(self, path: Path) -> None:
        pass

    @torch.no_grad()
    def _frozen_logps(self, batches: list[dict[str, Tensor]], sizes: list[int], reference: bool) -> list[Tensor]:
        """Per-batch ``[S, T]`` log-probs without gradients: the reference's, or the current policy's."""
        out = []
        self.model.eval()
        try:
            for batch, size in zip(batches, sizes):
                if reference:
                    with reference_model(self.model):
                        out.append(padded_token_logps(self.model, batch, size)[0])
                else:
                    out.append(padded_token_logps(self.model, batch, size)[0])
        finally:
            self.model.train()
        return out

    def update(self, rollout: Rollout, scores: Tensor, optimizer_step: Callable[[], None],
               forward_prompts: int) -> dict[str, float]:
        config, k = self.config, rollout.k
        n_prompts = len(rollout.prompts)
        # (1) One advantage per completion, from its group.
        advantages = group_advantages(scores.view(n_prompts, k), config.advantage_estimator,
                                      config.scale_rewards).view(-1).to(self.device)
        groups = chunks(n_prompts, forward_prompts)
        batches = [{key: t.to(self.device) for key, t in pack_rollout(rollout, self.pad_id, g).items()}
                   for g in groups]
        sizes = [len(g) * k for g in groups]
        tokens = [int(b["targets"].numel()) for b in batches]

        # (2) Frozen log-probs: the reference (skipped at beta 0), the sampler (only if reused).
        ref_logps = self._frozen_logps(batches, sizes, reference=True) if config.beta else None
        old_logps = self._frozen_logps(batches, sizes, reference=False) if config.num_iterations > 1 else None

        # (3) num_iterations optimizer steps over the whole rollout.
        totals: dict[str, float] = {}
        for iteration in range(config.num_iterations):
            for index, (group, batch) in enumerate(zip(groups, batches)):
                first = iteration == 0
                logps, mask, entropies = padded_token_logps(self.model, batch, sizes[index], entropy=first)
                old = old_logps[index] if old_logps is not None else logps.detach()
                chunk_advantages = advantages[group[0] * k:(group[-1] + 1) * k, None]
                losses, clipped = clipped_surrogate(logps, old, chunk_advantages, config.epsilon, config.epsilon_high)
                kl = k3(logps, ref_logps[index]) if ref_logps is not None else None
                if kl is not None:
                    losses = losses + config.beta * kl
                loss = aggregate(losses, mask, config.loss_aggregation, normaliser=config.max_new_tokens)
                # Each forward pass's share of the rollout: by tokens when every token weighs the same.
                share = tokens[index] / sum(tokens) if config.loss_aggregation == "token" else len(group) / n_prompts
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"grpo: loss is {loss.item()} on prompts {group} of this rollout")
                (loss * share).backward()
                values = {"loss": loss.item(), "clip_ratio": masked_mean(clipped.float(), mask).item(),
                          "approx_kl": masked_mean(approx_kl(logps.detach(), old), mask).item()}
                if kl is not None:
                    values["kl"] = masked_mean(kl.detach(), mask).item()
                if entropies is not None:
                    values["entropy"] = masked_mean(entropies, mask).item()
                for key, value in values.items():
                    weight = share / (config.num_iterations if key != "entropy" else 1)
                    totals[key] = totals.get(key, 0.0) + value * weight
            optimizer_step()
        totals["advantages/abs_mean"] = advantages.abs().mean().item()
        return totals


def train_grpo(config: GRPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with GRPO on ``config.data``'s prompts; returns the run folder and metrics."""

    def make(config: GRPOConfig, policy: Any, rewards: list) -> GRPO:
        return GRPO(config, policy.model, policy.tokenizer.pad_token_id, policy.device)

    return train_online(config, make, callbacks)
