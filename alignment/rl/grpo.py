"""GRPO (Shao et al. 2024, DeepSeekMath, eq. 3) with LoRA, and its siblings Dr. GRPO and RLOO.

For each rollout, the prompts with their K sampled completions (:meth:`GRPO.prepare`, no gradients):

1. advantages from the group (:func:`alignment.rl.advantages.group_advantages`): every token of
   completion ``i`` gets ``Â_i``;
2. the sampling policy's ("old") log-probs and, when ``beta > 0``, the reference's (at ``beta = 0``
   the reference pass is skipped entirely).

Then the loss (:meth:`GRPO.loss`), over ``num_iterations`` optimizer steps of the same rollout:

    L_t = −min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â) + β · k3_t,   ρ_t = π_θ(y_t) / π_old(y_t)

aggregated per sequence, per token or by a constant (:func:`alignment.rl.losses.aggregate`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from alignment.rl.advantages import group_advantages, masked_mean
from alignment.rl.kl import approx_kl, k3
from alignment.rl.losses import aggregate, clipped_surrogate
from alignment.rl.rollouts import Rollout, to_padded
from alignment.rl.trainer import OnlineRLMethod, padded_token_logps, reference_model
from alignment.training.config import GRPOConfig
from alignment.training.loop import TrainResult, model_inputs
from alignment.training.skeleton import train

__all__ = ["GRPO", "train_grpo"]


class GRPO(OnlineRLMethod):
    """Group-relative policy optimisation: no critic, the other answers to a prompt are the baseline."""

    name = "grpo"
    config: GRPOConfig

    def reuse(self) -> int:
        return self.config.num_iterations

    def prepare(self, rollout: Rollout, scores: Tensor, batch: dict[str, Tensor]) -> dict[str, Any]:
        config, model = self.config, self.trainable.model
        advantages = group_advantages(scores.view(len(rollout.prompts), rollout.k), config.advantage_estimator,
                                      config.scale_rewards).view(-1)
        old_logps, mask, entropy = padded_token_logps(model, batch, entropy=True)
        prepared: dict[str, Any] = {"advantages": advantages, "old_logps": old_logps,
                                    "metrics": {"entropy": masked_mean(entropy, mask).item(),
                                                "advantages/abs_mean": advantages.abs().mean().item()}}
        if config.beta:
            with reference_model(model):
                prepared["ref_logps"] = padded_token_logps(model, batch)[0]
        return prepared

    def loss(self, forward: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        config = self.config
        logps, mask = to_padded(forward(**model_inputs(batch)), batch["segments"], batch["last_index"].shape[0])
        old_logps = batch["old_logps"]
        losses, clipped = clipped_surrogate(logps, old_logps, batch["advantages"][:, None], config.epsilon,
                                            config.epsilon_high)
        metrics = {**batch["rollout_metrics"], "clip_ratio": masked_mean(clipped.float(), mask).item(),
                   "approx_kl": masked_mean(approx_kl(logps.detach(), old_logps), mask).item()}
        if config.beta:
            kl = k3(logps, batch["ref_logps"])
            losses = losses + config.beta * kl
            metrics["kl"] = masked_mean(kl.detach(), mask).item()
        return aggregate(losses, mask, config.loss_aggregation, normaliser=config.max_new_tokens), metrics


def train_grpo(config: GRPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with GRPO on ``config.data``'s prompts; returns the run folder and metrics."""
    return train(GRPO(config), callbacks)
