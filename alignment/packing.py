"""Shared-prefix packing: one prompt and all its completions in one row, the prompt computed once.

A preference pair is a prompt with two completions; a ranking is a prompt with K. Scoring them
as separate ``prompt + completion`` rows runs the prompt through the model K times, and in
chat data such as HH-RLHF the prompt (the conversation so far) is most of the tokens: on the
first 16 HH pairs, 1,850 prompt tokens against 1,573 completion tokens, so separate rows padded
to the batch's longest cost 8,608 token positions where a shared prefix needs 3,423.

Here each prompt becomes one row ``[prompt | completion 1 | ... | completion K]`` with

* ``position_ids`` that restart after the prompt for every completion, so each completion sits
  at exactly the positions it would have as ``prompt + completion`` alone;
* a 4-D attention mask in which a token sees the prompt and the earlier tokens of its own
  completion, never another completion;
* ``score_index``: for every completion token, the position of the hidden state that predicts it
  (the prompt's last token for a completion's first token, else the token before it), with the
  token (``targets``) and the completion it belongs to (``segments``);
* ``last_index``: where a sequence classifier reads each ``prompt + completion`` (transformers
  pools at the last token that is not the pad token).

With these, every completion's log-probability and reward equal those of the unpacked row up to
float rounding (tests check both). This is the "prefix sharing" of Wang et al., *Accelerating
Direct Preference Optimization with Prefix Sharing* (2024), applied to DPO, Plackett-Luce DPO and
the reward model alike.

Completions are numbered prompt-major: completion ``k`` of prompt ``i`` is segment ``i*K + k``
where ``K`` is that batch's number of completions per prompt (all prompts must have the same K;
callers pad rankings with empty completions and mask them).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["PACKED_INPUTS", "additive_mask", "build_shared_prefix_batch", "completion_lengths", "pack_shared_prefix"]

#: The tensors of a packed batch that a forward pass reads.
PACKED_INPUTS = ("input_ids", "attention_mask", "position_ids", "score_index", "targets", "segments",
                 "last_index")

#: Segment id of prompt tokens and of padding inside a row (completions are 1..K).
_PROMPT, _PAD = 0, -1


def truncate_to_fit(prompt: list[int], completions: list[list[int]],
                    max_length: int) -> tuple[list[int], list[list[int]]]:
    """Fit every ``prompt + completion`` into ``max_length`` tokens (also used by
    :func:`alignment.logprobs.build_completion_batch`, with one completion).

    The prompt is cut from the left (its end, next to the completion, matters most) keeping at
    least one token so a completion's first token can be scored, then completions are cut from
    the right. A shared prompt is cut once, to fit the longest completion.
    """
    longest = max(len(c) for c in completions)
    budget = max(max_length - longest, min(1, len(prompt)))
    if budget < len(prompt):
        prompt = prompt[len(prompt) - budget:]
    return prompt, [c[: max_length - len(prompt)] for c in completions]


def _last_unpadded(prompt: list[int], completion: list[int], pad: int, offset: int) -> int:
    """Packed position of the last token of ``prompt + completion`` that is not ``pad``.

    ``offset`` is where the completion starts in the row. Falls back to the row's first token
    when every token is the pad token (transformers' pooling does the same: index 0).
    """
    for j in range(len(completion) - 1, -1, -1):
        if completion[j] != pad:
            return offset + j
    for j in range(len(prompt) - 1, -1, -1):
        if prompt[j] != pad:
            return j
    return 0


def build_shared_prefix_batch(tokenizer: Any, prompts: Sequence[str], completions: Sequence[Sequence[str]],
                              max_length: int) -> dict[str, Tensor]:
    """Tokenise prompts with their completions into shared-prefix rows (see the module docstring).

    ``prompts`` are rendered strings (the chat template already applied); ``completions[i]`` are
    prompt ``i``'s completions, the same number for every prompt. The EOS token is appended to
    each completion (unless it already ends with it). Returns right-padded ``input_ids`` and
    ``position_ids`` ``[B, L]``, a boolean ``attention_mask`` ``[B, 1, L, L]`` (True: may
    attend), ``score_index`` ``[N, 2]`` (row, position), ``targets`` and ``segments`` ``[N]``,
    and ``last_index`` ``[B*K, 2]``.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completion lists")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    per_prompt = {len(c) for c in completions}
    if len(per_prompt) > 1 or 0 in per_prompt:
        raise ValueError(f"every prompt needs the same, non-zero number of completions; got {sorted(per_prompt)}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    flat = [text for group in completions for text in group]
    flat_ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    k = per_prompt.pop() if per_prompt else 0

    rows: list[tuple[list[int], list[list[int]]]] = []
    for i, prompt in enumerate(prompt_ids):
        group = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in flat_ids[i * k:(i + 1) * k]]
        rows.append(truncate_to_fit(prompt, group, max_length))
    return pack_shared_prefix(rows, pad)


def pack_shared_prefix(rows: Sequence[tuple[list[int], list[list[int]]]], pad: int) -> dict[str, Tensor]:
    """Token ids ``(prompt, [completion 1, ..., completion K])`` per row -> the tensors of
    :func:`build_shared_prefix_batch` (which tokenises text and then calls this).

    Online RL calls it directly with the ids it sampled: ids already fit, end with EOS when the
    model stopped, and must be scored exactly as they were drawn.
    """
    per_prompt = {len(group) for _, group in rows}
    if len(per_prompt) > 1 or 0 in per_prompt:
        raise ValueError(f"every prompt needs the same, non-zero number of completions; got {sorted(per_prompt)}")
    k = per_prompt.pop() if per_prompt else 0
    length = max((len(p) + sum(len(c) for c in cs) for p, cs in rows), default=0)
    batch = len(rows)
    input_ids = torch.full((batch, length), pad, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    segment_of_token = torch.full((batch, length), _PAD, dtype=torch.long)  # 0 prompt, k+1 completion k
    score_index: list[tuple[int, int]] = []
    targets: list[int] = []
    segments: list[int] = []
    last_index: list[tuple[int, int]] = []

    for b, (prompt, group) in enumerate(rows):
        n = len(prompt)
        input_ids[b, :n] = torch.tensor(prompt, dtype=torch.long)
        position_ids[b, :n] = torch.arange(n)
        segment_of_token[b, :n] = _PROMPT
        offset = n
        for c, completion in enumerate(group):
            m = len(completion)
            input_ids[b, offset:offset + m] = torch.tensor(completion, dtype=torch.long)
            position_ids[b, offset:offset + m] = torch.arange(n, n + m)
            segment_of_token[b, offset:offset + m] = c + 1
            # token j is predicted by the hidden state of the token before it *in its own sequence*
            predictors = [n - 1] + list(range(offset, offset + m - 1))
            for j, (source, token) in enumerate(zip(predictors, completion)):
                if j == 0 and n == 0:
                    continue  # no prompt token to predict the first completion token from
                score_index.append((b, source))
                targets.append(token)
                segments.append(b * k + c)
            last_index.append((b, _last_unpadded(prompt, completion, pad, offset)))
            offset += m
        # padding keeps position 0: it attends only to itself and nothing reads it

    return {
        "input_ids": input_ids,
        "attention_mask": _shared_prefix_mask(segment_of_token),
        "position_ids": position_ids,
        "score_index": torch.tensor(score_index, dtype=torch.long).reshape(-1, 2),
        "targets": torch.tensor(targets, dtype=torch.long),
        "segments": torch.tensor(segments, dtype=torch.long),
        "last_index": torch.tensor(last_index, dtype=torch.long).reshape(-1, 2),
    }


def completion_lengths(batch: dict[str, Tensor]) -> Tensor:
    """Scored tokens of each completion of a shared-prefix batch, ``[S]`` (what its log-prob sums over)."""
    return torch.bincount(batch["segments"], minlength=batch["last_index"].shape[0])


def _shared_prefix_mask(segment_of_token: Tensor) -> Tensor:
    """``[B, 1, L, L]`` bool: query ``q`` may attend key ``k`` when ``k <= q`` (causal) and ``k`` is
    a prompt token or in ``q``'s own completion. Padding attends only to itself, so no softmax
    row is empty (an empty row gives NaN, which the backward pass would spread)."""
    length = segment_of_token.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    query = segment_of_token[:, :, None]
    key = segment_of_token[:, None, :]
    visible = (key == _PROMPT) | (key == query)
    visible &= (query != _PAD) & (key != _PAD)
    visible |= torch.eye(length, dtype=torch.bool)
    return (visible & causal)[:, None]


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean "may attend" mask as the additive float mask every attention implementation takes:
    0 where allowed, the dtype's most negative value where not (eager attention adds the mask
    to the scores, so a boolean mask would not do)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
