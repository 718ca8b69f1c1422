"""Plackett-Luce DPO with LoRA: DPO over whole rankings of K completions per prompt.

:class:`PLDPO` is the method's part of :func:`alignment.training.skeleton.train`, shaped like
:class:`alignment.training.dpo.DPO`: all K completions of a ranking go through one forward;
rankings of different lengths share a batch through a mask. Tied ranks are kept: the loss treats
each tied group with Efron's method (:func:`alignment.losses.plackett_luce_loss`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from alignment.losses import plackett_luce_loss
from alignment.training.config import PLDPOConfig
from alignment.training.data import Ranking, load_rankings, ranking_batch
from alignment.training.loop import TrainResult, model_inputs
from alignment.training.reference import pad_rows
from alignment.training.skeleton import Data, Method, train


def split_ranking_rows(row_logps: Tensor, batch: dict) -> list[Tensor]:
    """A ranking batch's B*K rows -> one ``[k_b]`` tensor per ranking (padding columns dropped)."""
    mask = batch["ranking_mask"]
    table = row_logps.detach().view(mask.shape)
    return [table[b, : int(mask[b].sum())] for b in range(mask.shape[0])]


def lengths_mask(lengths: Sequence[int], width: int) -> Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(list(lengths)).unsqueeze(1)


def pl_metrics(policy: list[Tensor], reference: Tensor, rankings: Sequence[Ranking],
               config: PLDPOConfig) -> dict[str, float]:
    if not policy:
        return {}
    table = pad_rows(policy)
    mask = lengths_mask([len(row) for row in policy], table.shape[1])
    ranks = pad_rows([torch.tensor(r.ranks) for r in rankings])
    out = plackett_luce_loss(table, reference[:, : table.shape[1]], beta=config.beta, mask=mask, ranks=ranks)
    return {"loss": out.loss.item(), **out.metrics(), "n": len(policy)}


class PLDPO(Method):
    """Listwise DPO: the Plackett-Luce likelihood of each human ranking (:func:`plackett_luce_loss`)."""

    name = "pl_dpo"
    uses_reference = True

    def load_data(self) -> Data:
        """Rankings, ties included (and counted), held-out split by prompt."""
        loaded = load_rankings(self.config.data)
        return self.split(loaded.rankings, with_ties=loaded.with_ties)

    def make_batch(self, items: Sequence[Ranking]) -> dict:
        return ranking_batch(self.tokenizer, items, self.config.max_length, self.render)

    def split_rows(self, rows: Tensor, batch: dict) -> list[Tensor]:
        return split_ranking_rows(rows, batch)

    def loss(self, forward: Any, batch: dict) -> tuple[Tensor, dict[str, float]]:
        """The B*K completions of a batch in one forward, then the listwise loss."""
        mask = batch["ranking_mask"]
        logps = forward(**model_inputs(batch)).view(mask.shape)
        ref = self.reference["train"][batch["index"].cpu(), : mask.shape[1]].to(logps.device)
        out = plackett_luce_loss(logps, ref, beta=self.config.beta, mask=mask, ranks=batch["ranks"])
        return out.loss, out.metrics()

    def eval_metrics(self, rows: list[Tensor]) -> dict[str, float]:
        """Share of adjacent ranked pairs in order, and their mean reward gap."""
        return pl_metrics(rows, self.reference["eval"], self.data.held_out, self.config)


def train_pl_dpo(config: PLDPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with the Plackett-Luce DPO loss on listwise rows."""
    return train(PLDPO(config), callbacks)
