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
    "per_token_average",
    "plackett_luce_loss",
    "sigmoid_loss",
    "TIES",
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
    """IPO loss, per example: ``(h − 1/(2β))²``.

    Azar et al. 2023, eq. 17 (their ``τ`` is our ``β``): regresses the log-ratio gap onto a fixed
    target instead of pushing it to infinity, so it does not overfit deterministic preferences.
    ``logits`` must be ``h`` on *per-token average* log-ratios, as in the IPO authors' and TRL's
    implementations (``dpo_loss(loss_type="ipo")`` averages first; see :func:`per_token_average`):
    on summed log-ratios the fixed target would mean something different for long and short
    answers.
    """
    return (logits - 1 / (2 * beta)) ** 2


def per_token_average(logps: Tensor, lengths: Tensor) -> Tensor:
    """Summed completion log-probs ``[B]`` -> per-token averages ``log π(y|x) / |y|``."""
    if lengths is None or lengths.shape != logps.shape:
        raise ValueError(f"lengths must be a tensor shaped like the log-probs {tuple(logps.shape)}, "
                         f"got {None if lengths is None else tuple(lengths.shape)}")
    if (lengths <= 0).any():
        raise ValueError("every completion needs at least one token to average over")
    return logps / lengths.to(logps.dtype)


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
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> DPOOutput:
    """Direct Preference Optimization (Rafailov et al. 2023, eq. 7) and its pairwise variants.

    ``loss_type`` picks the function of the log-ratio gap from :data:`DPO_LOSSES`:
    ``"sigmoid"`` (DPO, with optional cDPO ``label_smoothing``), ``"ipo"`` (Azar et al. 2023)
    or ``"hinge"`` (SLiC, Zhao et al. 2023). The implicit rewards are
    ``β (log π_θ(y|x) − log π_ref(y|x))`` (Rafailov et al. 2023, section 5).

    IPO works on per-token *average* log-probabilities, ``log π(y|x) / |y|``, as the IPO authors
    and TRL (``loss_type="ipo"``) do: pass the completions' token counts as ``chosen_lengths`` /
    ``rejected_lengths`` (``[B]``); the four log-probs are divided by them before anything else,
    so the rewards and metrics of an IPO run are per-token too. The other losses use sums.
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {sorted(DPO_LOSSES)}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies only to the 'sigmoid' loss, not {loss_type!r}")
    if loss_type == "ipo":
        policy_chosen_logps, ref_chosen_logps = (
            per_token_average(x, chosen_lengths) for x in (policy_chosen_logps, ref_chosen_logps))
        policy_rejected_logps, ref_rejected_logps = (
            per_token_average(x, rejected_lengths) for x in (policy_rejected_logps, ref_rejected_logps))

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
    """Per-example Plackett-Luce losses, implicit rewards, the ranking mask and the ranks."""

    losses: Tensor  # [B], carries the graph
    rewards: Tensor  # [B, K], β (log π − log ref), detached; masked entries are 0
    mask: Tensor  # [B, K] bool, True where a completion is present
    ranks: Tensor  # [B, K] places, best first; equal places are ties

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()

    def metrics(self) -> dict[str, float]:
        """``rewards/accuracies``: fraction of adjacent ranked pairs (ties skipped) whose rewards are
        in order; ``rewards/margins``: their mean reward gap (better minus worse)."""
        pair_mask = self.mask[:, :-1] & self.mask[:, 1:] & (self.ranks[:, :-1] < self.ranks[:, 1:])
        gaps = (self.rewards[:, :-1] - self.rewards[:, 1:])[pair_mask]
        if gaps.numel() == 0:
            return {"rewards/accuracies": 0.0, "rewards/margins": 0.0}
        return {
            "rewards/accuracies": (gaps > 0).float().mean().item(),
            "rewards/margins": gaps.mean().item(),
        }


#: How tied groups enter the Plackett-Luce likelihood (see :func:`plackett_luce_loss`).
TIES = ("efron", "breslow")


def plackett_luce_loss(
    policy_logps: Tensor, ref_logps: Tensor, beta: float, mask: Tensor | None = None,
    ranks: Tensor | None = None, ties: str = "efron",
) -> PLOutput:
    """DPO for rankings under the Plackett-Luce model (Rafailov et al. 2023, Appendix A.3), with ties.

    ``policy_logps`` and ``ref_logps`` are ``[B, K]`` in ranked order (column 0 is the best);
    ``ranks`` (``[B, K]``, non-decreasing along each row; default ``0, 1, ..., K−1``) gives each
    completion's place, equal places being a tie. With implicit rewards ``s = β (log π − log ref)``,
    the places split a ranking into groups ``G_1, G_2, ...`` (best first). ``R_g`` is the "risk
    set" of group ``g``, the completions not placed before it (``G_g`` and everything below), and
    ``d_g = |G_g|``. The per-example loss is minus the log partial likelihood of Cox's
    proportional-hazards model, where a ranking is a sequence of "events" and ties are events at
    the same time:

        Efron (1977) (the default, as in R's survival::coxph):
            −Σ_g [ Σ_{i∈G_g} s_i − Σ_{l=0}^{d_g−1} log( Σ_{j∈R_g} exp(s_j) − (l/d_g) Σ_{i∈G_g} exp(s_i) ) ]

        Breslow (1974), ``ties="breslow"``:
            −Σ_g [ Σ_{i∈G_g} s_i − d_g log Σ_{j∈R_g} exp(s_j) ]

    (Efron, "The efficiency of Cox's likelihood function for censored data", JASA 72 (1977)
    557-565; Breslow, "Covariance analysis of censored survival data", Biometrics 30 (1974) 89-99.)
    The tied completions were drawn in some unknown order: Breslow keeps all of them in every
    denominator; Efron removes, at the ``l``-th draw, the share ``l/d_g`` of the group's weight
    that is gone on average over the ``d_g!`` orders, which is closer to the exact likelihood.
    Without ties every ``d_g = 1`` and both are the strict Plackett-Luce loss

        −Σ_{k=0}^{K−1} [ s_k − log Σ_{j=k}^{K−1} exp(s_j) ]

    (its last term is ``s − s = 0``); for ``K = 2`` it is exactly DPO's sigmoid loss.

    Computed per completion ``i`` of group ``g`` with ``l_i`` members of ``G_g`` before it: the
    term ``s_i − log(R − (l_i/d_g) T)`` with ``R = Σ_{R_g} exp(s)``, ``T = Σ_{G_g} exp(s)``, written
    as ``log R + log1p(−(l_i/d_g) T/R)`` in log space. ``K`` is small (a ranking shown to a person),
    so the ``[B, K, K]`` comparison tables cost nothing.

    ``mask`` (``[B, K]`` bool) lets rankings of different lengths share a batch: ``False``
    columns are ignored and must come after all ``True`` ones in their row.
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 2:
        raise ValueError(
            f"policy_logps and ref_logps must both be [B, K]; got {tuple(policy_logps.shape)} "
            f"and {tuple(ref_logps.shape)}"
        )
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    if mask is None:
        mask = torch.ones_like(policy_logps, dtype=torch.bool)
    mask = mask.to(device=policy_logps.device, dtype=torch.bool)
    if mask.shape != policy_logps.shape:
        raise ValueError(f"mask must be {tuple(policy_logps.shape)}, got {tuple(mask.shape)}")
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("masked (False) columns must all come after the present ones in each row")
    k = policy_logps.shape[1]
    if ranks is None:
        ranks = torch.arange(k, device=policy_logps.device).expand_as(policy_logps)
    ranks = ranks.to(device=policy_logps.device)
    if ranks.shape != policy_logps.shape:
        raise ValueError(f"ranks must be {tuple(policy_logps.shape)}, got {tuple(ranks.shape)}")
    if ((ranks[:, 1:] < ranks[:, :-1]) & mask[:, 1:]).any():
        raise ValueError("ranks must be non-decreasing along each row (columns best first)")

    rewards = beta * (policy_logps - ref_logps)
    s = torch.where(mask, rewards, torch.zeros_like(rewards))  # [B, K]
    # [B, i, j] tables; every completion belongs to its own risk set and group (so a masked
    # column's sums are finite: its term is s_i − log exp(s_i) = 0, no NaN gradient).
    itself = torch.eye(k, dtype=torch.bool, device=s.device)
    present_j = mask.unsqueeze(1)
    in_risk_set = (present_j & (ranks.unsqueeze(2) <= ranks.unsqueeze(1))) | itself  # j not placed before i
    in_group = (present_j & (ranks.unsqueeze(2) == ranks.unsqueeze(1))) | itself  # j tied with i
    s_j = s.unsqueeze(1).expand(-1, k, -1)
    log_r = torch.logsumexp(torch.where(in_risk_set, s_j, -torch.inf), dim=-1)  # log R_g, per i
    log_t = torch.logsumexp(torch.where(in_group, s_j, -torch.inf), dim=-1)  # log T_g, per i
    d = in_group.sum(-1)  # d_g, per i
    before = torch.ones(k, k, dtype=torch.bool, device=s.device).tril(-1)  # column j comes before column i
    l = (in_group & before).sum(-1)  # tied members drawn before i
    if ties == "breslow":
        l = torch.zeros_like(l)
    log_denominator = log_r + torch.log1p(-(l / d).to(s.dtype) * torch.exp(log_t - log_r))
    terms = torch.where(mask, s - log_denominator, torch.zeros_like(s))
    return PLOutput(
        losses=-terms.sum(dim=-1),
        rewards=torch.where(mask, rewards, torch.zeros_like(rewards)).detach(),
        mask=mask,
        ranks=ranks,
    )
