"""Plackett-Luce DPO with LoRA: DPO over whole rankings of K completions per prompt.

:func:`train_pl_dpo` has the shape of :func:`alignment.training.dpo.train_dpo`: (1) data and
split, (2) policy with LoRA, (3) reference log-probs once, (4) training loop, (5) held-out
evaluation, (6) saving. All K completions of a ranking go through one forward; rankings of
different lengths share a batch through a mask. Tied ranks are kept: the loss treats each tied
group with Efron's method (:func:`alignment.losses.plackett_luce_loss`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from alignment.losses import plackett_luce_loss
from alignment.training.callbacks import ProgressFile, as_callbacks, emit
from alignment.training.config import PLDPOConfig
from alignment.training.data import PromptCache, Ranking, load_rankings, ranking_batch
from alignment.training.dpo import policy_logps
from alignment.training.heldout import split_for_run
from alignment.training.lora import load_policy
from alignment.training.loop import (
    MODEL_INPUTS, PROGRESS_FILE, Task, TrainResult, fit, prepare_run_dir, rows_per_item, save_final,
)
from alignment.training.reference import REFERENCE_FILE, cached_reference_logps, pad_rows


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


def train_pl_dpo(config: PLDPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with the Plackett-Luce DPO loss on listwise rows."""
    run_dir = prepare_run_dir(config)
    callbacks = [ProgressFile(run_dir / PROGRESS_FILE), *as_callbacks(callbacks)]

    # (1) Data: rankings, ties included, held-out split by prompt (recorded in split.json).
    loaded = load_rankings(config.data)
    train, held_out = split_for_run(loaded.rankings, config, run_dir)

    # (2) Policy with LoRA.
    policy = load_policy(config)
    model, tokenizer, device = policy.model, policy.tokenizer, policy.device
    render = PromptCache(tokenizer)

    def make_batch(chunk: Sequence[Ranking]) -> dict:
        return ranking_batch(tokenizer, chunk, config.max_length, render)

    # (3) Reference log-probs of every completion, once ([N, K_max], zero-padded).
    reference, reference_source = cached_reference_logps(
        model, train, held_out, make_batch, split_ranking_rows, config=config,
        base_location=policy.base_location, run_dir=run_dir, device=device)

    # (4) Train: the B*K completions of a batch in one forward, then the listwise loss.
    def collate(indices: list[int]) -> dict:
        batch = make_batch([train[i] for i in indices])
        batch["index"] = torch.tensor(indices)
        return batch

    def loss(forward: Any, batch: dict) -> tuple[Tensor, dict[str, float]]:
        mask = batch["ranking_mask"]
        logps = forward(**{k: batch[k] for k in MODEL_INPUTS}).view(mask.shape)
        ref = reference["train"][batch["index"].cpu(), : mask.shape[1]].to(logps.device)
        out = plackett_luce_loss(logps, ref, beta=config.beta, mask=mask, ranks=batch["ranks"])
        return out.loss, out.metrics()

    task = Task(name="pl_dpo", n_train=len(train), collate=collate, loss=loss,
                checkpoint_files=[REFERENCE_FILE],
                begin_info={"n_eval": len(held_out), "with_ties": loaded.with_ties,
                            "reference": reference_source,
                            "reference_examples": len(train) + len(held_out)})
    result = fit(config, model, policy_logps, task, callbacks, run_dir)

    # (5) Evaluate: share of adjacent ranked pairs in order, and their mean reward gap.
    eval_metrics: dict[str, float] = {}
    if held_out:
        rows = rows_per_item(model, policy_logps, held_out, make_batch, split_ranking_rows,
                             config.batch_size, device)
        eval_metrics = pl_metrics(rows, reference["eval"], held_out, config)
        emit(callbacks, "eval", result.state("pl_dpo", loss=eval_metrics["loss"], metrics=eval_metrics))

    # (6) Save.
    if result.accelerator.is_main_process:
        save_final(run_dir, model, tokenizer, config, result.steps, result.metrics, eval_metrics,
                   {"n_train": len(train), "n_eval": len(held_out), "with_ties": loaded.with_ties,
                    "reference": reference_source})
        emit(callbacks, "save", result.state("pl_dpo", loss=result.metrics.get("loss"),
                                             metrics=result.metrics, path=str(run_dir), kind="final"))
    emit(callbacks, "train_end", result.state("pl_dpo", loss=result.metrics.get("loss"),
                                              metrics=result.metrics, eval_metrics=eval_metrics))
    return TrainResult(out_dir=run_dir, steps=result.steps, metrics=result.metrics, eval_metrics=eval_metrics)
