"""Advantages: how much better than expected an action (a token) or an answer turned out.

PPO estimates a per-token advantage from a learned value function with GAE; GRPO and its
siblings drop the critic and compare each answer with the other answers to the same prompt.

Shapes: per-token tensors are ``[B, T]`` (``B`` completions, right-padded to ``T`` tokens) with a
``mask`` ``[B, T]`` that is True on real tokens; group rewards are ``[G, K]`` (``G`` prompts,
``K`` completions each).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GROUP_ESTIMATORS", "REWARD_SCALINGS", "explained_variance", "gae", "group_advantages",
           "masked_mean", "masked_var", "whiten"]


# --------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------

def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Population variance of ``values`` where ``mask`` is True."""
    centred = values - masked_mean(values, mask)
    return masked_mean(centred ** 2, mask)


def whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise ``values`` to mean 0 and variance 1 over the masked tokens (0 elsewhere).

    PPO's advantage normalisation (Schulman et al. 2017, as in OpenAI baselines and Ziegler et
    al. 2019): the scale of the rewards then no longer sets the step size. ``shift_mean=False``
    only rescales, which keeps the sign of every advantage (used for rewards).
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """``1 − Var[R − V] / Var[R]`` over the masked tokens: 1 is a perfect critic, 0 no better than
    predicting the mean, negative worse than that. NaN when the returns do not vary."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return (1 - masked_var(returns - values, mask) / var_returns).item()


# --------------------------------------------------------------------------------------------
# PPO: generalised advantage estimation
# --------------------------------------------------------------------------------------------

def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eqs. 11-16); returns ``(advantages, returns)``.

        δ_t = r_t + γ V_{t+1} − V_t          (V after the last real token is 0: the episode ends)
        A_t = δ_t + γ λ A_{t+1}
        R_t = A_t + V_t                       (the critic's regression target)

    ``rewards``, ``values`` and ``mask`` are ``[B, T]``; padded positions get 0.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        # padding carries nothing back: the step before it is the last real one
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantage
    return advantages, (advantages + values) * mask


# --------------------------------------------------------------------------------------------
# GRPO and siblings: the group of answers to one prompt is the baseline
# --------------------------------------------------------------------------------------------

def group_mean_baseline(rewards: Tensor) -> Tensor:
    """``r_i − mean(r)``: GRPO's baseline (Shao et al. 2024, DeepSeekMath, section 4.1.2)."""
    return rewards - rewards.mean(dim=-1, keepdim=True)


def leave_one_out_baseline(rewards: Tensor) -> Tensor:
    """RLOO: ``r_i − (1/(K−1)) Σ_{j≠i} r_j`` (Kool et al. 2019; Ahmadian et al. 2024, eq. 7).

    Each answer is compared with the mean of the *other* answers, an unbiased baseline; it
    equals ``K/(K−1) · (r_i − mean(r))``.
    """
    k = rewards.shape[-1]
    others = (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


#: estimator -> centred advantage of ``[G, K]`` rewards. ``dr_grpo`` is GRPO's baseline without
#: the std scaling (Liu et al. 2025, "Understanding R1-Zero-Like Training", eq. 3); the scaling
#: is chosen separately (:data:`REWARD_SCALINGS`).
GROUP_ESTIMATORS = {
    "grpo": group_mean_baseline,
    "dr_grpo": group_mean_baseline,
    "rloo": leave_one_out_baseline,
}

#: How centred advantages are divided: by the std of their group (GRPO), of the whole batch
#: (more robust when a group's rewards barely differ: Liu et al. 2025 show the group std gives
#: too-easy and too-hard prompts the largest weights), or not at all.
REWARD_SCALINGS = ("group", "batch", "none")


def group_advantages(rewards: Tensor, estimator: str = "grpo", scale: str = "group", eps: float = 1e-4) -> Tensor:
    """One advantage per completion from ``[G, K]`` rewards (K completions of each of G prompts).

    GRPO (Shao et al. 2024, eq. 3 with outcome supervision): ``Â_i = (r_i − mean(r)) / (std(r) + eps)``,
    the same advantage for every token of completion ``i``. A group whose rewards are all equal
    carries no signal: its advantages are exactly 0 (the numerator is 0; ``eps`` keeps 0/0 away).
    ``std`` is the sample standard deviation (``K − 1`` in the denominator), as in TRL.
    """
    if rewards.dim() != 2 or rewards.shape[-1] < 2:
        raise ValueError(f"group rewards must be [G, K] with K >= 2, got shape {tuple(rewards.shape)}")
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {', '.join(GROUP_ESTIMATORS)}")
    if scale not in REWARD_SCALINGS:
        raise ValueError(f"unknown reward scaling {scale!r}; choose one of {', '.join(REWARD_SCALINGS)}")
    centred = GROUP_ESTIMATORS[estimator](rewards)
    if scale == "group":
        return centred / (rewards.std(dim=-1, keepdim=True) + eps)
    if scale == "batch":
        return centred / (rewards.std() + eps)
    return centred
