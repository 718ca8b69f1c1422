"""Policy-gradient losses: the clipped surrogate, the clipped value loss, and how token losses are averaged.

Per-token tensors are ``[B, T]`` with a ``mask`` (True on real completion tokens). Every function
returns per-token values; :func:`aggregate` reduces them to the scalar that is back-propagated.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LOSS_AGGREGATIONS", "aggregate", "clipped_surrogate", "clipped_value_loss"]


def clipped_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor,
                      eps_low: float, eps_high: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate loss per token, and where the clip was active.

        ρ_t = π_θ(y_t) / π_old(y_t) = exp(log π_θ − log π_old)
        L_t = −min(ρ_t Â_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â_t)

    Schulman et al. 2017, eq. 7 (``ε_low = ε_high = ε``); the decoupled upper bound is DAPO's
    "clip-higher" (Yu et al. 2025, eq. 10), which lets unlikely tokens grow faster. Returns
    ``(losses, clipped)`` where ``clipped`` is True when the clipped term was the one taken
    (logged as the clip fraction).
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    return -torch.min(unclipped, clipped), (clipped < unclipped).detach()


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """PPO's clipped value loss per token, and where the clip was active.

        V_clip = V_old + clip(V − V_old, −c, c)
        L_t = ½ max((V − R)², (V_clip − R)²)

    As in OpenAI baselines' PPO2 and Ziegler et al. 2019 (lm-human-preferences): the critic may
    not move its estimate more than ``c`` from the one it made at rollout time in one update.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped_loss, clipped_loss), (clipped_loss > unclipped_loss).detach()


def _per_sequence(losses: Tensor, mask: Tensor, normaliser: float | None) -> Tensor:
    # GRPO (Shao et al. 2024, eq. 3): average over each answer's tokens, then over answers.
    return ((losses * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def _per_token(losses: Tensor, mask: Tensor, normaliser: float | None) -> Tensor:
    # DAPO (Yu et al. 2025, eq. 12): every token of the batch weighs the same, so long answers
    # are not diluted.
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def _constant(losses: Tensor, mask: Tensor, normaliser: float | None) -> Tensor:
    # Dr. GRPO (Liu et al. 2025, eq. 3): divide by a constant (the generation budget) instead of
    # the answer's length, which removes GRPO's bias towards long wrong answers.
    if not normaliser:
        raise ValueError("the 'constant' loss aggregation needs a normaliser (e.g. max_new_tokens)")
    return (losses * mask).sum() / (losses.shape[0] * normaliser)


#: aggregation -> fn(losses [B, T], mask [B, T], normaliser) -> scalar
LOSS_AGGREGATIONS = {"sequence": _per_sequence, "token": _per_token, "constant": _constant}


def aggregate(losses: Tensor, mask: Tensor, mode: str, normaliser: float | None = None) -> Tensor:
    """Reduce per-token ``losses`` to a scalar: ``"sequence"``, ``"token"`` or ``"constant"``."""
    if mode not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}")
    return LOSS_AGGREGATIONS[mode](losses, mask.to(losses.dtype), normaliser)
