"""PPO from a reward, with LoRA: the RLHF recipe of Ziegler et al. 2019 and Ouyang et al. 2022.

Four roles, one copy of the base weights:

* actor: the policy, the LoRA adapter ``default``;
* critic: a scalar value head reading the hidden states of its own LoRA adapter ``critic`` over
  the same base weights (optionally its head starts as the reward model's score head);
* reference: the base with the adapters switched off (or the frozen ``init_adapter``);
* reward: the weighted reward functions / reward model of :mod:`alignment.rl.rewards`.

Per rollout (:meth:`PPO.update`):

1. without gradients: the actor's ("old") and the reference's log-probs and the critic's values
   of every completion token;
2. per-token rewards ``r_t = −β · KL_t`` plus the sequence's score at its last token (Ziegler et al.
   2019, eq. 2; Ouyang et al. 2022, eq. 2), β adaptive when ``target_kl`` is set;
3. GAE advantages and returns (:func:`alignment.rl.advantages.gae`), advantages whitened;
4. ``ppo_epochs`` passes over shuffled mini-batches, each an optimizer step on the clipped
   surrogate (actor) plus ``vf_coef`` times the clipped value loss (critic), averaged per token.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignment.logprobs import packed_score_rows
from alignment.rl.advantages import explained_variance, gae, masked_mean, whiten
from alignment.rl.grpo import chunks, padded_token_logps
from alignment.rl.kl import AdaptiveKLController, approx_kl, kl_penalty
from alignment.rl.losses import aggregate, clipped_surrogate, clipped_value_loss
from alignment.rl.rewards import RewardModelReward, WeightedReward
from alignment.rl.rollouts import Rollout, pack_rollout, to_padded
from alignment.rl.trainer import reference_model, train_online
from alignment.training.config import PPOConfig
from alignment.training.lora import TrainableModel, lora_config
from alignment.training.loop import TrainResult

__all__ = ["CRITIC_ADAPTER", "PPO", "train_ppo"]

CRITIC_ADAPTER = "critic"
VALUE_HEAD_FILE = "value_head.pt"


def pad_to(values: Tensor, width: int) -> Tensor:
    """Right-pad ``[S, T]`` with zeros to ``[S, width]``."""
    return F.pad(values, (0, width - values.shape[1]))


class PPO:
    """The PPO update (see the module docstring): owns the critic (its adapter and value head)."""

    def __init__(self, config: PPOConfig, policy: TrainableModel, rewards: list[WeightedReward]) -> None:
        self.config = config
        self.model = policy.model
        self.pad_id = policy.tokenizer.pad_token_id
        self.device = policy.device
        self.model.add_adapter(CRITIC_ADAPTER, lora_config(config))
        self.model.set_adapter("default")
        hidden = self.model.get_base_model().config.hidden_size
        self.value_head = nn.Linear(hidden, 1).to(self.device)
        nn.init.zeros_(self.value_head.weight)  # V = 0 until it has seen returns
        nn.init.zeros_(self.value_head.bias)
        if config.critic_from_reward_model:
            self._head_from_reward_model(rewards)
        self.kl_coef = config.kl_coef
        self.kl_controller = (AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
                              if config.target_kl is not None else None)
        self.generator = torch.Generator().manual_seed(config.seed)

    def _head_from_reward_model(self, rewards: list[WeightedReward]) -> None:
        from alignment.training.reward import score_head

        scorer = next(r.fn for r in rewards if isinstance(r.fn, RewardModelReward))
        head = score_head(scorer.model)
        weight = getattr(head, "modules_to_save", {}).get("default", head).weight if hasattr(head, "modules_to_save") \
            else head.weight
        if weight.shape[-1] != self.value_head.in_features:
            raise ValueError(f"critic_from_reward_model: the reward model's hidden size {weight.shape[-1]} differs "
                             f"from the policy's {self.value_head.in_features} (another base model)")
        with torch.no_grad():
            self.value_head.weight.copy_(weight.detach().float().reshape(1, -1))

    # -- state ---------------------------------------------------------------------------------

    def parameters(self) -> list[nn.Parameter]:
        critic = [p for name, p in self.model.named_parameters() if f".{CRITIC_ADAPTER}." in name]
        return critic + list(self.value_head.parameters())

    def save(self, path: Path) -> None:
        # the critic adapter is written by the model's save_pretrained, into path/critic
        torch.save(self.value_head.state_dict(), Path(path) / VALUE_HEAD_FILE)

    def restore(self, path: Path) -> None:
        from peft import load_peft_weights, set_peft_model_state_dict

        path = Path(path)
        weights = load_peft_weights(str(path / CRITIC_ADAPTER), device=str(self.device))
        set_peft_model_state_dict(self.model, weights, adapter_name=CRITIC_ADAPTER)
        self.value_head.load_state_dict(torch.load(path / VALUE_HEAD_FILE, map_location=self.device,
                                                   weights_only=True))

    # -- the critic ------------------------------------------------------------------------------

    @contextmanager
    def _critic(self) -> Iterator[None]:
        self.model.set_adapter(CRITIC_ADAPTER)
        try:
            yield
        finally:
            self.model.set_adapter("default")

    def _values(self, batch: dict[str, Tensor], n_completions: int) -> Tensor:
        """``[S, T]``: the critic's estimate of the return from the state before each completion token."""
        with self._critic():
            rows = packed_score_rows(self.model, **batch)
            return to_padded(self.value_head(rows.float()).squeeze(-1), batch["segments"], n_completions)[0]

    # -- one rollout -----------------------------------------------------------------------------

    @torch.no_grad()
    def _score(self, batches: list[dict[str, Tensor]], sizes: list[int], width: int) -> dict[str, Tensor]:
        """Step 1: old log-probs, reference log-probs, values and the mask, ``[S, width]`` each."""
        parts: dict[str, list[Tensor]] = {"old_logps": [], "ref_logps": [], "values": [], "mask": [],
                                          "entropy": []}
        self.model.eval()
        try:
            for batch, size in zip(batches, sizes):
                logps, mask, entropy = padded_token_logps(self.model, batch, size, entropy=True)
                with reference_model(self.model):
                    ref_logps = padded_token_logps(self.model, batch, size)[0]
                parts["old_logps"].append(pad_to(logps, width))
                parts["ref_logps"].append(pad_to(ref_logps, width))
                parts["values"].append(pad_to(self._values(batch, size), width))
                parts["mask"].append(pad_to(mask, width))
                parts["entropy"].append(pad_to(entropy, width))
        finally:
            self.model.train()
        return {key: torch.cat(values) for key, values in parts.items()}

    def update(self, rollout: Rollout, scores: Tensor, optimizer_step: Callable[[], None],
               forward_prompts: int) -> dict[str, float]:
        config, k = self.config, rollout.k
        groups = chunks(len(rollout.prompts), forward_prompts)
        batches = [{key: t.to(self.device) for key, t in pack_rollout(rollout, self.pad_id, g).items()}
                   for g in groups]
        sizes = [len(g) * k for g in groups]
        width = config.max_new_tokens + 1  # sampled tokens plus EOS

        # (1) Frozen quantities of the rollout.
        frozen = self._score(batches, sizes, width)
        mask = frozen["mask"]
        old_logps, ref_logps, old_values = frozen["old_logps"], frozen["ref_logps"], frozen["values"]

        # (2) Per-token rewards: the KL penalty everywhere, the score at the last token.
        kl = kl_penalty(old_logps, ref_logps, config.kl_estimator) * mask
        rewards = -self.kl_coef * kl
        last = mask.sum(-1) - 1
        rewards[torch.arange(len(last)), last] += scores.to(rewards.device)

        # (3) GAE, whitened advantages.
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)

        # (4) PPO epochs over shuffled mini-batches of forward chunks.
        rows = [range(sum(sizes[:i]), sum(sizes[:i + 1])) for i in range(len(sizes))]
        totals: dict[str, float] = {}
        n_updates = 0
        for _ in range(config.ppo_epochs):
            order = torch.randperm(len(groups), generator=self.generator).tolist()
            for mini_batch in (order[i::config.num_mini_batches] for i in range(config.num_mini_batches)):
                if not mini_batch:
                    continue
                tokens = sum(int(mask[list(rows[c])].sum()) for c in mini_batch)
                for c in mini_batch:
                    index = list(rows[c])
                    m = mask[index]
                    share = int(m.sum()) / max(tokens, 1)  # every token of the mini-batch weighs the same
                    logps = pad_to(padded_token_logps(self.model, batches[c], sizes[c])[0], width)
                    pg_losses, pg_clipped = clipped_surrogate(logps, old_logps[index], advantages[index],
                                                              config.cliprange)
                    policy_loss = aggregate(pg_losses, m, "token")
                    (policy_loss * share).backward()
                    values = pad_to(self._values(batches[c], sizes[c]), width)
                    vf_losses, vf_clipped = clipped_value_loss(values, old_values[index], returns[index],
                                                               config.cliprange_value)
                    value_loss = aggregate(vf_losses, m, "token")
                    (config.vf_coef * value_loss * share).backward()
                    for key, value in {
                        "policy/loss": policy_loss.item(), "value/loss": value_loss.item(),
                        "policy/clip_ratio": masked_mean(pg_clipped.float(), m).item(),
                        "value/clip_ratio": masked_mean(vf_clipped.float(), m).item(),
                        "approx_kl": masked_mean(approx_kl(logps.detach(), old_logps[index]), m).item(),
                    }.items():
                        totals[key] = totals.get(key, 0.0) + value * share
                optimizer_step()
                n_updates += 1
        metrics = {key: value / n_updates for key, value in totals.items()}
        metrics["loss"] = metrics["policy/loss"] + config.vf_coef * metrics["value/loss"]

        # The KL of this rollout (summed over each answer's tokens), and the coefficient it leads to.
        sequence_kl = kl.sum(-1).mean().item()
        metrics.update({
            "kl": sequence_kl, "kl_coef": self.kl_coef,
            "entropy": masked_mean(frozen["entropy"], mask).item(),
            "value/explained_variance": explained_variance(old_values, returns, mask),
            "value/mean": masked_mean(old_values, mask).item(),
        })
        if self.kl_controller is not None:
            self.kl_coef = self.kl_controller.update(sequence_kl, n_steps=len(scores))
        return metrics


def train_ppo(config: PPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with PPO on ``config.data``'s prompts; returns the run folder and metrics."""
    return train_online(config, PPO, callbacks)
