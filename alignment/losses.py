"""Preference losses as small pure functions over tensors.

Every function takes per-example tensors (``[B]``, or ``[B, K]`` for rankings) and returns
*per-example* losses; the caller reduces (usually ``.mean()``). Nothing here knows about models,
tokenizers or trainers, so each loss can be checked against its equation by hand.

Vocabulary (as in the papers and TRL):

* ``policy_chosen_logps`` / ``policy_rejected_logps``: ``log π_θ(y|x)``, the summed log-probability
  of a completion under the model being trained;
* ``ref_chosen_logps`` / ``ref_rejected_logps``: the same under the frozen reference model;
* ``chosen_rewards`` / ``rejected_rewards``: scalar rewards, either from a reward model or DPO's
  implicit reward ``β (log π_θ(y|x) − log π_ref(y|x))``;
* ``margins``: ``chosen_rewards − rejected_rewards``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DPO_LOSSES",
    "DPOOutput",
    "PLOutput",
    "bradley_terry_loss",
    "dpo_logits",
    "dpo_loss",
    "hinge_loss",
    "implicit_reward_accuracy",
    "ipo_loss",
    "plackett_luce_loss",
    "sigmoid_loss",
]


# --------------------------------------------------------------------------------------------
# Reward models
# --------------------------------------------------------------------------------------------

def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float | None = None
) -> Tensor:
    """Bradley-Terry reward-model loss, per example: ``−log σ(r_c − r_r − m)``.

    Ouyang et al. 2022 (InstructGPT), eq. 1; Christiano et al. 2017. The optional ``margin`` ``m``
    (a scalar or a ``[B]`` tensor, e.g. how strongly the annotator preferred the chosen answer) is
    the Llama 2 variant (Touvron et al. 2023, eq. 2): pairs must be separated by at least ``m``.
    ``F.logsigmoid`` keeps it stable for large reward gaps of either sign.
    """
    margins = chosen_rewards - rejected_rewards
    if margin is not None:
        margins = margins - margin
    return -F.logsigmoid(margins)


def implicit_reward_accuracy(chosen_rewards: Tensor, rejected_rewards: Tensor) -> float:
    """Fraction of pairs whose chosen reward is strictly higher (ties count as wrong)."""
    if chosen_rewards.numel() == 0:
        return 0.0
    return (chosen_rewards > rejected_rewards).float().mean().item()


# --------------------------------------------------------------------------------------------
# Pairwise DPO family
# --------------------------------------------------------------------------------------------

def dpo_logits(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    """The DPO log-ratio difference ``(log π_c − log ref_c) − (log π_r − log ref_r)``.

    Rafailov et al. 2023, the argument of σ in eq. 7 (before scaling by β). Also the ``h`` of
    IPO (Azar et al. 2023, eq. 17) and the score difference of SLiC's hinge (Zhao et al. 2023).
    """
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def sigmoid_loss(logits: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO loss, per example: ``−(1−ε) log σ(β·logits) − ε log σ(−β·logits)``.

    Rafailov et al. 2023, eq. 7 (``ε = 0``). With ``ε > 0`` it is conservative DPO (cDPO,
    Mitchell 2023): each label is assumed flipped with probability ``ε``.
    """
    return (
        -(1 - label_smoothing) * F.logsigmoid(beta * logits)
        - label_smoothing * F.logsigmoid(-beta * logits)
    )


def ipo_loss(logits: Tensor, beta: float) -> Tensor:
    """IPO loss, per example: ``(logits − 1/(2β))²``.

    Azar et al. 2023, eq. 17 (their ``τ`` is our ``β``): regresses the log-ratio gap onto a fixed
    target instead of pushing it to infinity, so it does not overfit deterministic preferences.
    """
    return (logits - 1 / (2 * beta)) ** 2


def hinge_loss(logits: Tensor, beta: float) -> Tensor:
    """SLiC hinge loss on the DPO log-ratio gap, per example: ``max(0, 1 − β·logits)``.

    Zhao et al. 2023 (SLiC-HF), the calibration loss with margin ``δ = 1/β``, applied to
    reference-normalised log-probabilities as in Liu et al. 2023 (RSO).
    """
    return F.relu(1 - beta * logits)


#: loss_type -> per-example loss of (logits, beta, **options)
DPO_LOSSES: dict[str, Callable[..., Tensor]] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
}


@dataclass
class DPOOutput:
    """Per-example DPO losses plus the detached quantities worth logging."""

    losses: Tensor  # [B], carries the graph
    chosen_rewards: Tensor  # [B], β (log π_c − log ref_c), detached
    rejected_rewards: Tensor  # [B], β (log π_r − log ref_r), detached
    policy_chosen_logps: Tensor  # [B], detached
    policy_rejected_logps: Tensor  # [B], detached

    @property
    def loss(self) -> Tensor:
        """The batch loss (mean over examples)."""
        return self.losses.mean()

    @property
    def margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards

    def metrics(self) -> dict[str, float]:
        """Floats keyed as TRL logs them, averaged over the batch."""
        return {
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/accuracies": implicit_reward_accuracy(self.chosen_rewards, self.rejected_rewards),
            "rewards/margins": self.margins.mean().item(),
            "logps/chosen": self.policy_chosen_logps.mean().item(),
            "logps/rejected": self.policy_rejected_logps.mean().item(),
        }


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """Direct Preference Optimization (Rafailov et al. 2023, eq. 7) and its pairwise variants.

    ``loss_type`` picks the function of the log-ratio gap from :data:`DPO_LOSSES`:
    ``"sigmoid"`` (DPO, with optional cDPO ``label_smoothing``), ``"ipo"`` (Azar et al. 2023)
    or ``"hinge"`` (SLiC, Zhao et al. 2023). The implicit rewards are
    ``β (log π_θ(y|x) − log π_ref(y|x))`` (Rafailov et al. 2023, section 5).
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {sorted(DPO_LOSSES)}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies only to the 'sigmoid' loss, not {loss_type!r}")

    logits = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    options = {"label_smoothing": label_smoothing} if label_smoothing else {}
    losses = DPO_LOSSES[loss_type](logits, beta, **options)
    return DPOOutput(
        losses=losses,
        chosen_rewards=beta * (policy_chosen_logps - ref_chosen_logps).detach(),
        rejected_rewards=beta * (policy_rejected_logps - ref_rejected_logps).detach(),
        policy_chosen_logps=policy_chosen_logps.detach(),
        policy_rejected_logps=policy_rejected_logps.detach(),
    )


# --------------------------------------------------------------------------------------------
# Listwise DPO (Plackett-Luce)
# --------------------------------------------------------------------------------------------

@dataclass
class PLOutput:
    """Per-example Plackett-Luce losses, implicit rewards and the ranking mask."""

    losses: Tensor  # [B], carries the graph
    rewards: Tensor  # [B, K], β (log π − log ref), detached; masked entries are 0
    mask: Tensor  # [B, K] bool, True where a completion is present

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()

    def metrics(self) -> dict[str, float]:
        """``rewards/accuracies``: fraction of adjacent ranked pairs whose rewards are in order;
        ``rewards/margins``: their mean reward gap (better minus worse)."""
        pair_mask = self.mask[:, :-1] & self.mask[:, 1:]
        gaps = (self.rewards[:, :-1] - self.rewards[:, 1:])[pair_mask]
        if gaps.numel() == 0:
            return {"rewards/accuracies": 0.0, "rewards/margins": 0.0}
        return {
            "rewards/accuracies": (gaps > 0).float().mean().item(),
            "rewards/margins": gaps.mean().item(),
        }


def plackett_luce_loss(
    policy_logps: Tensor, ref_logps: Tensor, beta: float, mask: Tensor | None = None
) -> PLOutput:
    """DPO for rankings under the Plackett-Luce model (Rafailov et al. 2023, Appendix A.3).

    ``policy_logps`` and ``ref_logps`` are ``[B, K]`` in ranked order (column 0 is the best).
    With implicit rewards ``s = β (log π − log ref)`` the per-example loss is

        −Σ_{k=0}^{K−2} [ s_k − log Σ_{j=k}^{K−1} exp(s_j) ]

    (the ``k = K−1`` term is ``s − s = 0``). The inner sums are one reverse ``logcumsumexp``, so
    the cost is O(K). For ``K = 2`` this is exactly DPO's sigmoid loss.

    ``mask`` (``[B, K]`` bool) lets rankings of different lengths share a batch: ``False``
    columns are ignored and must come after all ``True`` ones in their row.
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 2:
        raise ValueError(
            f"policy_logps and ref_logps must both be [B, K]; got {tuple(policy_logps.shape)} "
            f"and {tuple(ref_logps.shape)}"
        )
    if mask is None:
        mask = torch.ones_like(policy_logps, dtype=torch.bool)
    mask = mask.to(device=policy_logps.device, dtype=torch.bool)
    if mask.shape != policy_logps.shape:
        raise ValueError(f"mask must be {tuple(policy_logps.shape)}, got {tuple(mask.shape)}")
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("masked (False) columns must all come after the present ones in each row")

    rewards = beta * (policy_logps - ref_logps)
    # A very negative finite fill contributes exp(.) = 0 to the sums without the NaN gradients
    # that -inf would cause in logcumsumexp's backward.
    s = torch.where(mask, rewards, torch.finfo(rewards.dtype).min)
    log_tail_sums = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)  # log Σ_{j≥k} exp(s_j)
    terms = torch.where(mask, s - log_tail_sums, torch.zeros_like(s))
    return PLOutput(
        losses=-terms.sum(dim=-1),
        rewards=torch.where(mask, rewards, torch.zeros_like(rewards)).detach(),
        mask=mask,
    )
