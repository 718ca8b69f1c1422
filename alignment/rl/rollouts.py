"""Rollouts: prompts in, K sampled completions per prompt out, with their rewards and per-token log-probs.

This module owns

* the prompt file (:func:`load_prompts`): JSONL rows with a ``prompt`` (string) or chat
  ``messages``; the other columns travel to the reward functions;
* sampling K completions per prompt with the policy through the batched generation backend
  (:class:`alignment.sampling.TransformersBackend`: EOS stop, KV cache), keeping the sampled ids;
* packing a rollout for scoring: one prompt and its K completions in one row, the prompt
  computed once (:func:`alignment.packing.pack_shared_prefix`), exactly the sampled tokens;
* moving per-token values between the packed order (``[N]``, completion by completion) and the
  padded ``[S, T]`` layout the losses use (:func:`to_padded`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.chat import Messages
from alignment.packing import pack_shared_prefix
from alignment.sampling import Sample, SamplingParams, TransformersBackend
from alignment.training.data import DataError, prompt_to_messages, read_jsonl

__all__ = ["Rollout", "RLPrompt", "load_prompts", "pack_rollout", "sample_rollout", "to_padded"]


@dataclass(frozen=True)
class RLPrompt:
    """One prompt: as the file gave it (``prompt``), as chat messages, and its other columns."""

    prompt: str | Messages
    prompt_messages: Messages
    columns: dict[str, Any] = field(default_factory=dict)


def load_prompts(path: str | Path) -> list[RLPrompt]:
    """Read a prompt file: JSONL rows with ``prompt`` (a string or messages) or ``messages``.

    A ``messages`` conversation that ends with an assistant turn is cut before it (the policy
    writes that turn). Raises :class:`alignment.training.data.DataError` naming the line.
    """
    prompts = []
    for line_no, row in read_jsonl(path):
        try:
            if "prompt" in row:
                given = row["prompt"]
            elif "messages" in row:
                given = list(row["messages"])
                while given and isinstance(given[-1], dict) and given[-1].get("role") == "assistant":
                    given.pop()
                if not given:
                    raise ValueError("messages hold no user turn")
            else:
                raise ValueError("missing 'prompt' (a string or messages) or 'messages'")
            columns = {k: v for k, v in row.items() if k not in ("prompt", "messages")}
            prompts.append(RLPrompt(prompt=given, prompt_messages=prompt_to_messages(given), columns=columns))
        except ValueError as exc:
            raise DataError(f"{path}:{line_no}: {exc}") from None
    return prompts


@dataclass
class Rollout:
    """K completions for each of G prompts (completion ``i*K + k`` belongs to prompt ``i``)."""

    prompts: list[RLPrompt]
    prompt_ids: list[list[int]]
    samples: list[list[Sample]]  # [G][K]
    eos_id: int

    @property
    def k(self) -> int:
        return len(self.samples[0]) if self.samples else 0

    @property
    def flat(self) -> list[Sample]:
        return [s for group in self.samples for s in group]

    def completion_ids(self) -> list[list[int]]:
        """Each completion's tokens as scored: the sampled ids, plus EOS when the model stopped."""
        return [[*s.token_ids, self.eos_id] if s.finish_reason == "stop" else list(s.token_ids) for s in self.flat]

    def reward_inputs(self) -> tuple[list[Any], list[str], dict[str, list[Any]]]:
        """``(prompts, completions, columns)`` for the reward functions, one entry per completion."""
        k = self.k
        prompts = [p.prompt for p in self.prompts for _ in range(k)]
        completions = [s.text for s in self.flat]
        columns: dict[str, list[Any]] = {}
        for name in {key for p in self.prompts for key in p.columns}:
            columns[name] = [p.columns.get(name) for p in self.prompts for _ in range(k)]
        columns.update(
            prompt_messages=[p.prompt_messages for p in self.prompts for _ in range(k)],
            finish_reasons=[s.finish_reason for s in self.flat],
            completion_lengths=[s.num_tokens for s in self.flat],
        )
        return prompts, completions, {**columns, "group_size": k}


def sample_rollout(backend: TransformersBackend, prompts: Sequence[RLPrompt], k: int,
                   params: SamplingParams) -> Rollout:
    """K completions per prompt from ``backend``'s model, in eval mode (no dropout), without gradients."""
    model = backend.loaded.model
    was_training = model.training
    model.eval()
    try:
        prompt_ids = [backend.prompt_ids(p.prompt_messages, params) for p in prompts]
        samples = backend.sample([p.prompt_messages for p in prompts], k, params)
    finally:
        model.train(was_training)
    eos = backend.loaded.tokenizer.eos_token_id
    return Rollout(prompts=list(prompts), prompt_ids=prompt_ids, samples=samples, eos_id=eos)


def pack_rollout(rollout: Rollout, pad_id: int, groups: Sequence[int] | None = None) -> dict[str, Tensor]:
    """The shared-prefix batch of the prompts ``groups`` (default: all) with their K completions."""
    ids = rollout.completion_ids()
    k = rollout.k
    groups = range(len(rollout.prompts)) if groups is None else groups
    rows = [(rollout.prompt_ids[g], ids[g * k:(g + 1) * k]) for g in groups]
    return pack_shared_prefix(rows, pad_id)


def to_padded(values: Tensor, segments: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """Per-token ``values`` ``[N]`` in packed order -> ``([S, T], mask [S, T])``, right-padded with 0.

    Tokens of a completion are contiguous and in order in a packed batch, so splitting by the
    completion lengths restores them.
    """
    lengths = torch.bincount(segments, minlength=n_segments)
    rows = torch.split(values, lengths.tolist())
    padded = torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)
    width = padded.shape[1] if padded.dim() == 2 else 0
    mask = torch.arange(width, device=values.device)[None, :] < lengths.to(values.device)[:, None]
    return padded, mask
