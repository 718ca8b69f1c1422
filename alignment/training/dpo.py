"""DPO with LoRA: the policy is the adapted model, the reference is the same model with the adapter off.

:class:`DPO` is the method's part of :func:`alignment.training.skeleton.train`: preference pairs
and their held-out split, each pair's prompt, chosen and rejected completions in one forward, the
DPO loss against the cached reference log-probs, implicit-reward metrics on the held-out pairs.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from alignment.losses import dpo_loss
from alignment.packing import completion_lengths
from alignment.training.config import DPOConfig
from alignment.training.loop import TrainResult, batched, model_inputs
from alignment.training.skeleton import PairMethod, train


def pair_lengths(batch: dict) -> Tensor:
    """Token counts of a pair batch's completions, ``[B, 2]`` (chosen, rejected): IPO averages over them."""
    return completion_lengths(batch).view(-1, 2)


def pair_loss(policy: Tensor, reference: Tensor, lengths: Tensor, config: DPOConfig):
    """The configured DPO-family loss of ``[N, 2]`` (chosen, rejected) policy vs reference log-probs."""
    return dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
                    beta=config.beta, loss_type=config.loss, label_smoothing=config.label_smoothing,
                    chosen_lengths=lengths[:, 0], rejected_lengths=lengths[:, 1])


def dpo_metrics(policy: Tensor, reference: Tensor, lengths: Tensor, config: DPOConfig) -> dict[str, float]:
    """Loss and implicit-reward metrics of ``[N, 2]`` policy vs reference log-probs."""
    if len(policy) == 0:
        return {}
    out = pair_loss(policy, reference, lengths, config)
    return {"loss": out.loss.item(), **out.metrics(), "n": len(policy)}


class DPO(PairMethod):
    """Direct preference optimisation on pairs (Rafailov et al. 2023), the loss from :func:`dpo_loss`."""

    name = "dpo"
    uses_reference = True

    def loss(self, forward: Any, batch: dict) -> tuple[Tensor, dict[str, float]]:
        logps = forward(**model_inputs(batch)).view(-1, 2)
        ref = self.reference["train"][batch["index"].cpu()].to(logps.device)
        out = pair_loss(logps, ref, pair_lengths(batch), self.config)
        return out.loss, out.metrics()

    def eval_metrics(self, rows: list[Tensor]) -> dict[str, float]:
        """Held-out implicit-reward accuracy and mean margin (and the DPO loss)."""
        lengths = torch.cat([pair_lengths(self.make_batch(chunk))
                             for chunk in batched(self.data.held_out, self.config.batch_size)])
        return dpo_metrics(torch.stack(rows), self.reference["eval"], lengths, self.config)


def train_dpo(config: DPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with DPO on ``config.data``; returns the run folder and its metrics."""
    return train(DPO(config), callbacks)
