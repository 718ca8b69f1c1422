"""PPO from a reward, with LoRA: the RLHF recipe of Ziegler et al. 2019 and Ouyang et al. 2022.

Four roles, one copy of the base weights:

* actor: the policy, the LoRA adapter ``default``;
* critic: a scalar value head (``model.value_head``) reading the hidden states of its own LoRA
  adapter ``critic`` over the same base weights (optionally starting as the reward model: its
  LoRA and its score head);
* reference: the base with the adapters switched off (or the frozen ``init_adapter``);
* reward: the weighted reward functions / reward model of :mod:`alignment.rl.rewards`.

For each rollout (:meth:`PPO.prepare`, no gradients):

1. the actor's ("old") and the reference's log-probs and the critic's values of every token;
2. per-token rewards ``r_t = −β · KL_t`` plus the sequence's score at its last token (Ziegler et al.
   2019, eq. 2; Ouyang et al. 2022, eq. 2), β adaptive when ``target_kl`` is set;
3. GAE advantages and returns (:func:`alignment.rl.advantages.gae`), whitened over the rollout.

Then ``ppo_epochs`` passes over that rollout, each shuffling its prompts into ``num_mini_batches``
mini-batches with one optimizer step each (:meth:`PPO.minibatches`; the usual PPO epochs and
mini-batches, as in Schulman et al. 2017, Algorithm 1, and Huang et al. 2022, "The 37
implementation details of PPO", detail 6: mini-batch updates). Each step's loss (:meth:`PPO.loss`) is the
clipped surrogate (actor) plus ``vf_coef`` times the clipped value loss (critic), averaged over
the mini-batch's tokens.
"""
from __future__ import annotations

import time
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
        return self.config.ppo_epochs * self.config.num_mini_batches

    # -- the critic ------------------------------------------------------------------------------
    def setup(self, policy: TrainableModel) -> None:
        model = policy.model
        from_reward_model = self.config.critic_from_reward_model
        critic_config, critic_weights = (self._reward_model_lora() if from_reward_model
                                         else (lora_config(self.config), None))
        model.add_adapter(CRITIC_ADAPTER, critic_config)
        if critic_weights is not None:
            self._load_critic_lora(critic_weights, self.config.reward_model)
        model.set_adapter("default")
        model.set_requires_grad(["default", CRITIC_ADAPTER], True)  # both train; one is active at a time
        head = nn.Linear(model.get_base_model().config.hidden_size, 1).to(policy.device)
        nn.init.zeros_(head.weight)  # V = 0 until it has seen returns
        nn.init.zeros_(head.bias)
        if from_reward_model:
            self._copy_reward_head(head)
        model.value_head = head  # a submodule of the model: the loop's optimizer trains it
        if self.config.resume_from:
            self._restore_critic(Path(self.config.resume_from))
        self.kl_coef = self.config.kl_coef
        self.kl_controller = (AdaptiveKLController(self.config.kl_coef, self.config.target_kl, self.config.kl_horizon)
                              if self.config.target_kl is not None else None)

    def _restore_critic(self, checkpoint: Path) -> None:
        """The critic as the checkpoint left it: its LoRA (PEFT saved it under ``critic/``) and its
        value head. The loop restores the actor and the optimizer, whose state covers the critic's
        parameters too: a fresh critic under a restored optimizer would take steps sized for another."""
        from peft import load_peft_weights, set_peft_model_state_dict

        lora, head = checkpoint / CRITIC_ADAPTER, checkpoint / VALUE_HEAD_FILE
        if not (lora.is_dir() and head.is_file()):
            raise ValueError(f"cannot resume PPO from {checkpoint}: it holds no critic ({CRITIC_ADAPTER}/ and "
                             f"{VALUE_HEAD_FILE})")
        self._load_critic_lora(load_peft_weights(str(lora), device=str(self.trainable.device)), checkpoint)
        self.trainable.model.value_head.load_state_dict(
            torch.load(head, map_location=self.trainable.device, weights_only=True))

    def _reward_model_lora(self) -> tuple[Any, dict[str, Tensor]]:
        """The reward model's LoRA (its config, as a causal-LM adapter, and its weights) for the critic to
        start from: the critic then starts as the reward model reading each prefix (InstructGPT
        initialises its value function from the reward model, Ouyang et al. 2022, Appendix C)."""
        from peft import LoraConfig, PeftConfig, TaskType, load_peft_weights

        path = str(Path(self.config.reward_model).expanduser())
        saved = PeftConfig.from_pretrained(path)
        config = LoraConfig(r=saved.r, lora_alpha=saved.lora_alpha, lora_dropout=self.config.lora_dropout,
                            target_modules=saved.target_modules, bias="none", task_type=TaskType.CAUSAL_LM)
        weights = {k: v for k, v in load_peft_weights(path, device=str(self.trainable.device)).items()
                   if ".lora_" in k}  # the score head (modules_to_save) becomes the value head instead
        return config, weights

    def _load_critic_lora(self, weights: dict[str, Tensor], source: Any) -> None:
        from peft import set_peft_model_state_dict

        try:
            result = set_peft_model_state_dict(self.trainable.model, weights, adapter_name=CRITIC_ADAPTER)
        except RuntimeError as exc:  # a shape mismatch: another base model
            raise ValueError(f"the critic LoRA in {source} does not fit this model: {str(exc)[:200]}") from None
        missing = [k for k in getattr(result, "missing_keys", []) if f".{CRITIC_ADAPTER}." in k]
        if getattr(result, "unexpected_keys", None) or missing:
            raise ValueError(f"the critic LoRA in {source} does not fit this model "
                             f"(unexpected {list(result.unexpected_keys)[:2]}, missing {missing[:2]})")

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
        # the critic's LoRA is written by the model's save_pretrained, into <folder>/critic (run
        # folder and checkpoints alike)
        torch.save(self.trainable.model.value_head.state_dict(), Path(run_dir) / VALUE_HEAD_FILE)

    # -- one rollout -----------------------------------------------------------------------------
    def prepare(self, rollout: Rollout, scores: Tensor, batch: dict[str, Tensor]) -> dict[str, Any]:
        config, model = self.config, self.trainable.model
        # (1) Frozen quantities of the rollout (each pass timed: the step-time breakdown people tune by).
        started = time.monotonic()
        old_logps, mask, entropy = padded_token_logps(model, batch, entropy=True)
        scored = time.monotonic()
        with reference_model(model):
            ref_logps = padded_token_logps(model, batch)[0]
        referenced = time.monotonic()
        old_values = self.values(batch)
        timings = {"time/old_logps_s": scored - started, "time/reference_s": referenced - scored,
                   "time/critic_s": time.monotonic() - referenced}
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
                   "value/mean": masked_mean(old_values, mask).item(), **timings}
        if self.kl_controller is not None:
            self.kl_coef = self.kl_controller.update(sequence_kl, n_steps=len(scores))
        return {"old_logps": old_logps, "old_values": old_values, "advantages": advantages, "returns": returns,
                "metrics": metrics}

    # -- the steps on it ----------------------------------------------------------------------
    def minibatches(self, rollout: Rollout) -> list[list[int]]:
        """``ppo_epochs`` x ``num_mini_batches`` shares of the rollout's prompts: each epoch a fresh
        permutation (seeded by the run's seed and the round, so a rerun repeats it), cut into
        ``num_mini_batches`` near-equal shares."""
        config = self.config
        if config.num_mini_batches == 1:
            return [list(range(len(rollout.prompts)))]
        generator = torch.Generator().manual_seed(config.seed * 100_003 + self._round)
        shares = []
        for _ in range(config.ppo_epochs):
            order = torch.randperm(len(rollout.prompts), generator=generator)
            shares += [sorted(share.tolist()) for share in torch.tensor_split(order, config.num_mini_batches)]
        return shares

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
