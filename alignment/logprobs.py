"""Sequence log-probabilities of completions under a causal LM, without full-vocabulary logits.

DPO-style training needs ``log π(y|x) = Σ_t log π(y_t | x, y_<t)`` over the completion tokens
only. The straightforward way (:func:`completion_logps_naive`) runs the LM head over every
position of every sequence and takes a ``[B, L, V]`` log-softmax; with SmolLM2's 49k vocabulary
that tensor dominates both the time and the memory of a training step on CPU, and most of it is
thrown away (prompt tokens, padding).

:func:`completion_logps` instead runs only the transformer body, keeps the hidden states of the
positions that predict completion tokens, and applies the LM head to those rows in chunks,
computing ``logit[target] − logsumexp(logits)`` per row. When gradients are needed each chunk is
checkpointed, so the backward pass recomputes a chunk's logits instead of keeping all of them:
peak memory is ``chunk_size × V`` floats rather than ``B × L × V``.

Works for plain ``transformers`` causal LMs and for PEFT-wrapped ones, including the reference
pass inside ``with model.disable_adapter():``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from alignment.packing import additive_mask, truncate_to_fit

__all__ = ["build_completion_batch", "completion_logps", "completion_logps_naive", "completion_token_logps",
           "packed_completion_logps", "packed_hidden_states", "packed_score_rows", "packed_token_logps",
           "row_token_logps", "token_entropies"]


# --------------------------------------------------------------------------------------------
# Log-probabilities
# --------------------------------------------------------------------------------------------

def _decoder(model: nn.Module) -> nn.Module:
    """The transformer body (embeddings + layers + final norm) without the LM head.

    ``get_decoder()`` is forwarded by PEFT wrappers to the underlying model, and the returned
    module contains the injected adapter layers, so ``disable_adapter()`` still applies.
    """
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or decoder is model:
        decoder = getattr(model, "model", None)
    if not isinstance(decoder, nn.Module):
        raise TypeError(f"cannot find the decoder of {type(model).__name__}: no get_decoder() or .model")
    return decoder


def _softcap(model: nn.Module) -> float | None:
    """Final-logit soft-capping (Gemma 2/3) that the model's own forward would apply."""
    config = getattr(model, "config", None)
    return getattr(config, "final_logit_softcapping", None) or None


def _row_logps(lm_head: nn.Module, hidden: Tensor, targets: Tensor, softcap: float | None) -> Tensor:
    """``logit[target] − logsumexp(logits)`` for each row of ``hidden`` ([N, H] -> [N], float32).

    Written as ``−cross_entropy``, which is exactly that quantity but fused: forward and backward
    are about twice as fast on CPU as an explicit ``gather − logsumexp`` (one pass over the vocab
    instead of several, and no one-hot scatter in the backward).
    """
    logits = lm_head(hidden).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return -F.cross_entropy(logits, targets, reduction="none")


def _scored(attention_mask: Tensor, completion_mask: Tensor) -> Tensor:
    """``[B, L-1]``: True where ``hidden[:, t]`` predicts a completion token ``input_ids[:, t + 1]``."""
    return completion_mask[:, 1:].bool() & attention_mask[:, 1:].bool()


def completion_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    chunk_size: int = 1024,
) -> Tensor:
    """Summed log-probability of the completion tokens of each sequence, ``[B]`` float32.

    ``completion_mask[b, t] = 1`` marks token ``t`` of sequence ``b`` as a completion token;
    it is scored by the hidden state at ``t − 1`` (so a completion token at position 0 cannot be
    scored and is ignored). Sequences are expected right-padded, as
    :func:`build_completion_batch` makes them. Only the scored rows go through the LM head,
    ``chunk_size`` rows at a time.
    """
    token_logps = completion_token_logps(model, input_ids, attention_mask, completion_mask, chunk_size)
    sequence_of_token = _scored(attention_mask, completion_mask).nonzero()[:, 0]  # [N]
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    return sums.index_add(0, sequence_of_token, token_logps)


def completion_token_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    chunk_size: int = 1024,
) -> Tensor:
    """Log-probability of each completion token, ``[N]`` float32, sequence by sequence, left to right.

    The per-token terms that :func:`completion_logps` sums (same masks, same chunked LM head), for
    callers that need them one by one, e.g. a per-token KL estimate.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    hidden = _decoder(model)(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state  # [B, L, H]
    scored = _scored(attention_mask, completion_mask)
    return row_token_logps(model, hidden[:, :-1][scored], input_ids[:, 1:][scored], chunk_size)


def row_token_logps(model: nn.Module, rows: Tensor, targets: Tensor, chunk_size: int = 1024) -> Tensor:
    """Log-prob of ``targets[i]`` given hidden row ``rows[i]``, ``[N]`` float32, ``chunk_size`` rows of LM
    head at a time (checkpointed when gradients are needed)."""
    lm_head = model.get_output_embeddings()
    softcap = _softcap(model)
    needs_grad = torch.is_grad_enabled() and (
        rows.requires_grad or any(p.requires_grad for p in lm_head.parameters())
    )
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        h, y = rows[start:start + chunk_size], targets[start:start + chunk_size]
        if needs_grad:
            # keep only the chunk's hidden rows for backward; its logits are recomputed there
            pieces.append(checkpoint(_row_logps, lm_head, h, y, softcap, use_reentrant=False))
        else:
            pieces.append(_row_logps(lm_head, h, y, softcap))
    return torch.cat(pieces) if pieces else rows.new_zeros(0, dtype=torch.float32)


def packed_hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
    """The decoder's last hidden states ``[B, L, H]`` for a shared-prefix batch
    (:func:`alignment.packing.build_shared_prefix_batch`): its 4-D boolean mask goes in as an
    additive mask, which transformers passes to the attention as it is."""
    decoder = _decoder(model)
    dtype = next(decoder.parameters()).dtype
    if not dtype.is_floating_point:  # 4-bit weights: the mask follows the compute dtype
        dtype = torch.bfloat16 if input_ids.is_cuda else torch.float32
    return decoder(input_ids=input_ids, attention_mask=additive_mask(attention_mask, dtype),
                   position_ids=position_ids, use_cache=False).last_hidden_state


def packed_completion_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    score_index: Tensor,
    targets: Tensor,
    segments: Tensor,
    last_index: Tensor,
    chunk_size: int = 1024,
) -> Tensor:
    """Summed log-probability of every completion of a shared-prefix batch, ``[S]`` float32.

    The same quantity as :func:`completion_logps` on the unpacked ``prompt + completion`` rows,
    with each prompt computed once. ``S`` (the number of completions) is ``len(last_index)``.
    """
    token_logps = packed_token_logps(model, input_ids, attention_mask, position_ids, score_index, targets,
                                     chunk_size)
    sums = torch.zeros(last_index.shape[0], dtype=torch.float32, device=input_ids.device)
    return sums.index_add(0, segments, token_logps)


def packed_token_logps(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                       score_index: Tensor, targets: Tensor, chunk_size: int = 1024, **_: Tensor) -> Tensor:
    """Log-probability of every completion token of a shared-prefix batch, ``[N]`` float32, in the
    order of ``score_index`` (completion by completion, left to right): the per-token terms that
    :func:`packed_completion_logps` sums, for per-token losses such as PPO's."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = packed_score_rows(model, input_ids, attention_mask, position_ids, score_index)
    return row_token_logps(model, rows, targets, chunk_size)


def packed_score_rows(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                      score_index: Tensor, **_: Tensor) -> Tensor:
    """The hidden state that predicts each completion token of a shared-prefix batch, ``[N, H]``
    (what the LM head turns into log-probs, and what a value head reads)."""
    hidden = packed_hidden_states(model, input_ids, attention_mask, position_ids)
    return hidden[score_index[:, 0], score_index[:, 1]]


@torch.no_grad()
def token_entropies(model: nn.Module, rows: Tensor, chunk_size: int = 1024) -> Tensor:
    """Entropy of the next-token distribution at each hidden row, ``[N]`` float32 (a diagnostic:
    an RL policy whose entropy collapses has stopped exploring)."""
    lm_head = model.get_output_embeddings()
    softcap = _softcap(model)
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        logits = lm_head(rows[start:start + chunk_size]).float()
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        logps = torch.log_softmax(logits, dim=-1)
        pieces.append(-(logps.exp() * logps).sum(-1))
    return torch.cat(pieces) if pieces else rows.new_zeros(0, dtype=torch.float32)


def completion_logps_naive(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
) -> Tensor:
    """Reference implementation of :func:`completion_logps`: full ``[B, L, V]`` log-softmax + gather.

    Simple and obviously right, but memory-hungry; used as the baseline in tests and benchmarks.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, L-1]
    scored = completion_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    return torch.where(scored, token_logps, torch.zeros_like(token_logps)).sum(-1)


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------

def build_completion_batch(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_length: int
) -> dict[str, Tensor]:
    """Tokenise (prompt, completion) pairs into a right-padded batch with a completion mask.

    Prompts are already-rendered strings (the caller applies the chat template), so neither part
    gets extra special tokens; the EOS token is appended to each completion (unless it already
    ends with it) so the model is trained to stop. When a pair is longer than ``max_length`` the
    prompt is cut from the left first (its end, next to the completion, matters most), keeping at
    least one prompt token so the first completion token can still be scored; then the completion
    is cut from the right (losing its EOS, as it should: the text did not end there).

    Returns ``input_ids``, ``attention_mask`` and ``completion_mask`` (prompt 0, completion 1,
    padding 0), all ``[B, L]`` long tensors, ``L`` being the longest pair (≤ ``max_length``).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"] if completions else []

    rows: list[tuple[list[int], list[int]]] = []
    for prompt, completion in zip(prompt_ids, completion_ids):
        if not completion or completion[-1] != eos:
            completion = [*completion, eos]
        prompt, (completion,) = truncate_to_fit(prompt, [completion], max_length)
        rows.append((prompt, completion))

    length = max((len(p) + len(c) for p, c in rows), default=0)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        n, m = len(prompt), len(completion)
        input_ids[i, : n + m] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[i, : n + m] = 1
        completion_mask[i, n : n + m] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
