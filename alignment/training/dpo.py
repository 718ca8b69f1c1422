"""DPO with LoRA: the policy is the adapted model, the reference is the same model with the adapter off.

:func:`train_dpo` reads top to bottom: (1) data and held-out split, (2) policy with LoRA,
(3) reference log-probabilities once, (4) the training loop, (5) held-out evaluation, (6) saving.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from alignment.logprobs import packed_completion_logps
from alignment.losses import dpo_loss
from alignment.packing import completion_lengths
from alignment.training.callbacks import ProgressFile, as_callbacks, emit
from alignment.training.config import DPOConfig
from alignment.training.data import PreferencePair, PromptCache, load_pairs, pair_batch
from alignment.training.heldout import split_for_run
from alignment.training.lora import load_policy
from alignment.training.loop import (
    MODEL_INPUTS, PROGRESS_FILE, Task, TrainResult, batched, fit, prepare_run_dir, rows_per_item, save_final,
)
from alignment.training.reference import REFERENCE_FILE, cached_reference_logps


def policy_logps(model: Any, **batch: Tensor) -> Tensor:
    """Summed log-prob of every completion of a shared-prefix batch (the forward the loop trains through)."""
    return packed_completion_logps(model, **batch)


def split_pair_rows(logps: Tensor, batch: dict) -> list[Tensor]:
    """A pair batch's scores ``[chosen_0, rejected_0, chosen_1, ...]`` -> one ``[chosen, rejected]`` per pair."""
    return list(logps.detach().view(-1, 2))


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


def train_dpo(config: DPOConfig, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train a LoRA adapter with DPO on ``config.data``; returns the run folder and its metrics."""
    run_dir = prepare_run_dir(config)
    callbacks = [ProgressFile(run_dir / PROGRESS_FILE), *as_callbacks(callbacks)]

    # (1) Data: preference pairs, and a held-out split by prompt (recorded in split.json).
    pairs = load_pairs(config.data)
    train, held_out = split_for_run(pairs, config, run_dir)

    # (2) Policy: a fresh copy of the base model with LoRA adapters (the only trainable weights).
    policy = load_policy(config)
    model, tokenizer, device = policy.model, policy.tokenizer, policy.device
    render = PromptCache(tokenizer)

    def make_batch(chunk: Sequence[PreferencePair]) -> dict:
        return pair_batch(tokenizer, chunk, config.max_length, render)

    # (3) Reference log-probs: one pass with the adapter disabled, cached in the run folder.
    reference, reference_source = cached_reference_logps(
        model, train, held_out, make_batch, split_pair_rows, config=config,
        base_location=policy.base_location, run_dir=run_dir, device=device)

    # (4) Train: each pair's prompt, chosen and rejected go through one forward as one row.
    def collate(indices: list[int]) -> dict:
        batch = make_batch([train[i] for i in indices])
        batch["index"] = torch.tensor(indices)
        return batch

    def loss(forward: Any, batch: dict) -> tuple[Tensor, dict[str, float]]:
        logps = forward(**{k: batch[k] for k in MODEL_INPUTS}).view(-1, 2)
        ref = reference["train"][batch["index"].cpu()].to(logps.device)
        out = pair_loss(logps, ref, pair_lengths(batch), config)
        return out.loss, out.metrics()

    task = Task(name="dpo", n_train=len(train), collate=collate, loss=loss,
                checkpoint_files=[REFERENCE_FILE],
                begin_info={"n_eval": len(held_out), "reference": reference_source,
                            "reference_examples": len(train) + len(held_out)})
    result = fit(config, model, policy_logps, task, callbacks, run_dir)

    # (5) Evaluate on the held-out pairs: implicit-reward accuracy and mean margin.
    eval_metrics: dict[str, float] = {}
    if held_out:
        rows = rows_per_item(model, policy_logps, held_out, make_batch, split_pair_rows,
                             config.batch_size, device)
        lengths = torch.cat([pair_lengths(make_batch(chunk)) for chunk in batched(held_out, config.batch_size)])
        eval_metrics = dpo_metrics(torch.stack(rows), reference["eval"], lengths, config)
        emit(callbacks, "eval", result.state("dpo", loss=eval_metrics["loss"], metrics=eval_metrics))

    # (6) Save: adapter, tokenizer, resolved config, metrics.
    if result.accelerator.is_main_process:
        save_final(run_dir, model, tokenizer, config, result.steps, result.metrics, eval_metrics,
                   {"n_train": len(train), "n_eval": len(held_out), "reference": reference_source})
        emit(callbacks, "save", result.state("dpo", loss=result.metrics.get("loss"), metrics=result.metrics,
                                             path=str(run_dir), kind="final"))
    emit(callbacks, "train_end", result.state("dpo", loss=result.metrics.get("loss"), metrics=result.metrics,
                                              eval_metrics=eval_metrics))
    return TrainResult(out_dir=run_dir, steps=result.steps, metrics=result.metrics, eval_metrics=eval_metrics)
