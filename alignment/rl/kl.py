"""KL divergence between the policy and the reference: per-token estimators and the adaptive coefficient.

With tokens sampled from the policy π, ``log r = log π_ref(y_t) − log π(y_t)`` per token, the
estimators of ``KL(π ‖ π_ref)`` from Schulman (2020), "Approximating KL Divergence":

* k1 = ``−log r``: unbiased, high variance, can be negative for a single token;
* k3 = ``(r − 1) − log r``: unbiased and always >= 0, lower variance (GRPO's choice, Shao et al.
  2024, eq. 4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KL_ESTIMATORS", "AdaptiveKLController", "approx_kl", "k1", "k3", "kl_penalty"]


def k1(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """``log π(y_t) − log π_ref(y_t)`` per token (Schulman 2020, k1)."""
    return logps - ref_logps


def k3(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """``exp(log π_ref − log π) − (log π_ref − log π) − 1`` per token (Schulman 2020, k3).

    ``expm1`` keeps ``r − 1`` exact for tiny log-ratios, where k3 ≈ (log r)² / 2 would otherwise
    drown in rounding (the Compare tab's KL to base is such a case).
    """
    log_ratio = ref_logps - logps
    return torch.expm1(log_ratio) - log_ratio


KL_ESTIMATORS = {"k1": k1, "k3": k3}


def kl_penalty(logps: Tensor, ref_logps: Tensor, estimator: str) -> Tensor:
    """The per-token KL estimate named by ``estimator`` (``"k1"`` or ``"k3"``)."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logps, ref_logps)


def approx_kl(logps: Tensor, old_logps: Tensor) -> Tensor:
    """``½ (log π − log π_old)²`` per token: how far an update moved the policy from the one that
    sampled (logged as ``approx_kl``; the k2 estimator of Schulman 2020)."""
    return 0.5 * (logps - old_logps) ** 2


@dataclass
class AdaptiveKLController:
    """The KL coefficient that steers the observed KL towards a target (Ziegler et al. 2019, eq. 2).

        e_t = clip(KL_t / KL_target − 1, −0.2, 0.2)
        β_{t+1} = β_t (1 + K_β e_t),   K_β = n_steps / horizon

    ``n_steps`` is how many rollouts (completions) the observation covers, ``horizon`` how many
    it takes to correct the coefficient by about ``e^1`` (Ziegler et al. use 10,000).
    """

    value: float
    target: float
    horizon: int = 10_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target) and self.target > 0):
            raise ValueError(f"target KL must be a finite number > 0, got {self.target!r}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon!r}")

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value
