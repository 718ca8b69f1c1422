"""PPO from a reward, with LoRA: the RLHF recipe of Ziegler et al. 2019 and Ouyang et al. 2022.

Four roles, one copy of the base weights:

* actor: the policy, the LoRA adapter ``default``;
* critic: a scalar value head (``model.value_head``) reading the hidden states of its own LoRA
  adapter ``critic`` over the same base weights (the head optionally starts as the reward
  model's score head);
* reference: the base with the adapters switched off (or the frozen ``init_adapter``);
* reward: the weighted reward functions / reward model of :mod:`alignment.rl.rewards`.

For each sampled chunk (:meth:`PPO.prepare`, no gradients):

1. the actor's ("old") and the reference's log-probs and the critic's values of every token;
2. per-token rewards ``r_t = −β · KL_t`` plus the sequence's score at its last token (Ziegler et al.
   2019, eq. 2; Ouyang et al. 2022, eq. 2), β adaptive when ``target_kl`` is set;
3. GAE advantages and returns (:func:`alignment.rl.advantages.gae`), whitened over the chunk (PPO
   forwards the whole batch as one chunk unless ``micro_batch_size`` splits it).

Then ``ppo_epochs`` optimizer steps on that rollout (:meth:`PPO.loss`), each the clipped surrogate
(actor) plus ``vf_coef`` times the clipped value loss (critic), averaged over tokens.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alignment.logprobs import packed_score_rows
from alignment.rl.advantages import explained_variance, gae, masked_mean, whiten
from alignment.rl.kl import AdaptiveKLController, approx_kl, kl_penalty
from alignment.rl.losses import aggregate, clipped_surrogate, clipped_value_loss
from alignment.rl.rewards import RewardModelReward
from alignment.rl.rollouts import Rollout, to_padded
from alignment.rl.trainer import OnlineRLMethod, active_adapter, padded_token_logps, reference_model
from alignment.training.config import PPOConfig
from alignment.training.lora import TrainableModel, lora_config
from alignment.training.loop import TrainResult, model_inputs
from alignment.training.skeleton import train

__all__ = ["CRITIC_ADAPTER", "PPO", "train_ppo"]

CRITIC_ADAPTER = "critic"
VALUE_HEAD_FILE = "value_head.pt"


class PPO(OnlineRLMethod):
    """PPO with a LoRA critic over the policy's own base weights (see the module docstring)."""

    name = "ppo"
    config: PPOConfig

    def reuse(self) -> int:
        return self.config.ppo_epochs

    # -- the critic ------------------------------------------------------------------------------
    def setup(self, policy: TrainableModel) -> None:
        model = policy.model
        model.add_adapter(CRITIC_ADAPTER, lora_config(self.config))
        model.set_adapter("default")
        model.set_requires_grad(["default", CRITIC_ADAPTER], True)  # both train; one is active at a time
        head = nn.Linear(model.get_base_model().config.hidden_size, 1).to(policy.device)
        nn.init.zeros_(head.weight)  # V = 0 until it has seen returns
        nn.init.zeros_(head.bias)
        if self.config.critic_from_reward_model:
            self._copy_reward_head(head)
        model.value_head = head  # a submodule of the model: the loop's optimizer trains it
        self.kl_coef = self.config.kl_coef
        self.kl_controller = (AdaptiveKLController(self.config.kl_coef, self.config.target_kl, self.config.kl_horizon)
                              if self.config.target_kl is not None else None)

    def _copy_reward_head(self, head: nn.Linear) -> None:
        from alignment.training.reward import score_head

        scorer = next(r.fn for r in self.rewards if isinstance(r.fn, RewardModelReward))
        score = score_head(scorer.model)
        weight = score.modules_to_save["default"].weight if hasattr(score, "modules_to_save") else score.weight
        if weight.shape[-1] != head.in_features:
            raise ValueError(f"critic_from_reward_model: the reward model's hidden size {weight.shape[-1]} differs "
                             f"from the policy's {head.in_features} (another base model)")
        with torch.no_grad():
            head.weight.copy_(weight.detach().float().reshape(1, -1))

    def values(self, batch: dict[str, Tensor]) -> Tensor:
        """``[S, T]``: the critic's estimate of the return from the state before each completion token."""
        model = self.trainable.model
        with active_adapter(model, CRITIC_ADAPTER):
            rows = packed_score_rows(model, **batch)
            values = model.value_head(rows.float()).squeeze(-1)
        return to_padded(values, batch["segments"], batch["last_index"].shape[0])[0]

    def save(self, run_dir: Path) -> None:
        # the critic's LoRA is written by the model's save_pretrained, into run_dir/critic
        torch.save(self.trainable.model.value_head.state_dict(), Path(run_dir) / VALUE_HEAD_FILE)

    # -- one rollout -----------------------------------------------------------------------------
    def prepare(self, rollout: Rollout, scores: Tensor, batch: dict[str, Tensor]) -> dict[str, Any]:
        config, model = self.config, self.trainable.model
        # (1) Frozen quantities of the rollout.
        old_logps, mask, entropy = padded_token_logps(model, batch, entropy=True)
        with reference_model(model):
            ref_logps = padded_token_logps(model, batch)[0]
        old_values = self.values(batch)
        # (2) Per-token rewards: the KL penalty everywhere, the score at the last token.
        kl = kl_penalty(old_logps, ref_logps, config.kl_estimator) * mask
        rewards = -self.kl_coef * kl
        last = mask.sum(-1) - 1
        rewards[torch.arange(len(last)), last] += scores
        # (3) GAE; whitened advantages.
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)
        sequence_kl = kl.sum(-1).mean().item()
        metrics = {"kl": sequence_kl, "kl_coef": self.kl_coef, "entropy": masked_mean(entropy, mask).item(),
                   "value/explained_variance": explained_variance(old_values, returns, mask),
                   "value/mean": masked_mean(old_values, mask).item()}
        if self.kl_controller is not None:
            self.kl_coef = self.kl_controller.update(sequence_kl, n_steps=len(scores))
        return {"old_logps": old_logps, "old_values": old_values, "advantages": advantages, "returns": returns,
                "metrics": metrics}

    def loss(self, forward: Any, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        config = self.config
        logps, mask = to_padded(forward(**model_inputs(batch)), batch["segments"], batch["last_index"].shape[0])
        pg_losses, pg_clipped = clipped_surrogate(logps, batch["old_logps"], batch["advantages"], config.cliprange)
        policy_loss = aggregate(pg_losses, mask, "token")
        vf_losses, vf_clipped = clipped_value_loss(self.values(batch), batch["old_values"], batch["returns"],
                                                   config.cliprange_value)
        value_loss = aggregate(vf_losses, mask, "token")
        metrics = {**batch["rollout_metrics"], "policy/loss": policy_loss.item(), "value/loss": value_loss.item(),
                   "policy/clip_ratio": masked_mean(pg_clipped.float(), mask).item(),
                   "value/clip_ratio": masked_mean(vf_clipped.float(), mask).item(),
                   "approx_kl": masked_mean(approx_kl(logps.detach(), batch["old_logps"]), mask).item()}
        return policy_loss + config.vf_coef * value_loss, metrics


def train_ppo(config: PPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with PPO on ``config.data``'s prompts; returns the run folder and metrics."""
    return train(PPO(config), callbacks)
