"""Training data: TRL preference JSONL in, tokenised tensors out.

This module owns

* reading the rows prefstudio exports (``storage.exporters``) into :class:`PreferencePair` and
  :class:`Ranking` records, with an error naming the line of the first bad row;
* the deterministic held-out split (:func:`split`), by prompt so one prompt never sits on both sides;
* rendering prompts with the tokenizer's chat template and batching them with their completions
  into tensors: pairs and rankings as shared-prefix rows, the prompt computed once for all its
  completions (:func:`pair_batch`, :func:`ranking_batch`; see :mod:`alignment.packing`), single
  responses as plain rows (:func:`response_batch`).

Accepted rows:

* pairwise, standard: ``{"prompt": str, "chosen": str, "rejected": str}``; a string prompt is one
  user message unless it is an HH transcript (``"\\n\\nHuman: ...\\n\\nAssistant:"``), which is
  parsed into messages by :mod:`storage.hh`, the reader the importers use;
* pairwise, conversational: ``prompt`` as messages, ``chosen``/``rejected`` as
  ``[{"role": "assistant", "content": ...}]``;
* an optional numeric ``"margin"`` on pairwise rows (used by the reward model with ``use_margin``);
* listwise: ``{"prompt", "completions" (best first), "ranks"}`` where equal ranks are ties; tied
  rows are kept (the Plackett-Luce loss takes tied groups, :func:`alignment.losses.plackett_luce_loss`)
  and counted in :attr:`RankingSet.with_ties`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from alignment.chat import Messages, render_prompt, validate_messages
from alignment.logprobs import build_completion_batch
from alignment.packing import build_shared_prefix_batch
from storage.hh import hh_prompt_dialogue, parse_hh_dialogue  # stdlib only: the one HH reader (layering test)

T = TypeVar("T")



class DataError(ValueError):
    """A row of a training file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class PreferencePair:
    prompt_messages: Messages
    chosen: str
    rejected: str
    margin: float | None = None


@dataclass(frozen=True)
class Ranking:
    prompt_messages: Messages
    completions: list[str]  # best first
    ranks: list[int]  # non-decreasing after loading; equal ranks are ties


@dataclass
class RankingSet:
    rankings: list[Ranking]
    with_ties: int = 0  # how many of them have at least one tie

    def __len__(self) -> int:
        return len(self.rankings)


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------

def prompt_to_messages(prompt: Any) -> Messages:
    """A row's prompt as chat messages (ValueError when it is neither a string nor messages)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt is empty")
        dialogue = hh_prompt_dialogue(prompt)
        if dialogue is not None:
            messages = parse_hh_dialogue(dialogue)
            if messages and messages[-1]["role"] == "user":
                return messages
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        messages = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
                    for m in prompt]
        validate_messages(messages)
        return messages
    raise ValueError(f"prompt must be a string or a list of messages, got {type(prompt).__name__}")


def completion_text(value: Any, name: str) -> str:
    """A completion given as a string or as ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        message = value[0]
        if message.get("role") != "assistant":
            raise ValueError(f"{name} message must have role 'assistant', got {message.get('role')!r}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{name} message content must be a string")
        return message["content"]
    raise ValueError(f"{name} must be a string or a list with one assistant message")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) for every non-blank line; DataError on invalid JSON or a non-object."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            rows.append((line_no, row))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _missing(row: dict, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if k not in row]


def _parse_rows(path: str | Path, required: Sequence[str], other_kind: tuple[str, str],
                parse: Callable[[dict], Any]) -> list[Any]:
    """``parse(row)`` for every row of a JSONL file, after checking it has the ``required`` keys;
    a row of the other kind (it has ``other_kind[0]``) is told so (``other_kind[1]``). Any
    ValueError becomes a DataError naming the line."""
    parsed = []
    for line_no, row in read_jsonl(path):
        try:
            missing = _missing(row, required)
            if missing:
                key, hint = other_kind
                raise ValueError(f"missing {', '.join(missing)}{f' ({hint})' if key in row else ''}")
            parsed.append(parse(row))
        except ValueError as exc:
            raise DataError(f"{path}:{line_no}: {exc}") from None
    return parsed


def _pair(row: dict) -> PreferencePair:
    margin = row.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise ValueError(f"margin must be a number, got {margin!r}")
    return PreferencePair(
        prompt_messages=prompt_to_messages(row["prompt"]),
        chosen=completion_text(row["chosen"], "chosen"),
        rejected=completion_text(row["rejected"], "rejected"),
        margin=None if margin is None else float(margin),
    )


def _ranking(row: dict) -> Ranking:
    completions, ranks = row["completions"], row["ranks"]
    if not isinstance(completions, list) or not isinstance(ranks, list):
        raise ValueError("completions and ranks must be lists")
    if len(completions) != len(ranks):
        raise ValueError(f"{len(completions)} completions but {len(ranks)} ranks")
    if len(completions) < 2:
        raise ValueError("a ranking needs at least 2 completions")
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in ranks):
        raise ValueError(f"ranks must be non-negative integers, got {ranks}")
    messages = prompt_to_messages(row["prompt"])
    texts = [completion_text(c, f"completions[{i}]") for i, c in enumerate(completions)]
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])  # best first, stable
    return Ranking(prompt_messages=messages, completions=[texts[i] for i in order], ranks=[ranks[i] for i in order])


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Pairwise rows (standard or conversational) -> PreferencePair; DataError with the line number."""
    return _parse_rows(path, ("prompt", "chosen", "rejected"),
                       ("completions", "a listwise row? train it with PL-DPO"), _pair)


def load_rankings(path: str | Path) -> RankingSet:
    """Listwise rows -> Ranking (best first, ties kept); the rankings with a tie are counted."""
    rankings = _parse_rows(path, ("prompt", "completions", "ranks"),
                           ("chosen", "a pairwise row? train it with DPO"), _ranking)
    return RankingSet(rankings, sum(len(set(r.ranks)) < len(r.ranks) for r in rankings))


def ranking_pairs(rankings: Sequence[Ranking]) -> list[PreferencePair]:
    """Each ranking's ordered pairs (better, worse), tied completions not paired: K(K-1)/2 without ties."""
    return [PreferencePair(r.prompt_messages, r.completions[i], r.completions[j])
            for r in rankings for i in range(len(r.ranks)) for j in range(i + 1, len(r.ranks))
            if r.ranks[i] < r.ranks[j]]


# --------------------------------------------------------------------------------------------
# Held-out split
# --------------------------------------------------------------------------------------------

def prompt_key(item: Any) -> str:
    """Group key of a PreferencePair / Ranking: its prompt, as canonical JSON."""
    return json.dumps(item.prompt_messages, sort_keys=True, ensure_ascii=False)


def prompt_sha256(item: Any) -> str:
    """Content hash of an item's prompt (the same prompt hashes the same in any file, any run)."""
    return hashlib.sha256(prompt_key(item).encode("utf-8")).hexdigest()


def held_out_draw(key: str, seed: int) -> float:
    """A prompt's draw in [0, 1), from a hash of its key and the seed: a function of that prompt alone."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split(items: Sequence[T], eval_fraction: float, seed: int,
          key: Callable[[T], str] = prompt_key) -> tuple[list[T], list[T]]:
    """Deterministic (train, eval) split holding out about ``eval_fraction`` of the prompts.

    Items sharing a ``key`` (by default: the same prompt) land on the same side, so the held-out
    score is measured on unseen prompts. A prompt is held out when its :func:`held_out_draw`
    (a hash of the prompt and ``seed``) is below ``eval_fraction``, so its side does not depend
    on the other rows: adding labels for new prompts never moves an existing prompt across
    (hash-bucket splitting). The held-out share of prompts is ``eval_fraction`` in expectation,
    with binomial noise on small sets. Two guards for small sets, which may move the prompt
    nearest the threshold: at least one prompt stays in train, and with ``eval_fraction > 0``
    and two or more prompts at least one is held out. The original order is kept on each side.
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    items = list(items)
    if not items:
        raise ValueError("no items to split")
    draws = {k: held_out_draw(k, seed) for k in map(key, items)}
    held = {k for k, draw in draws.items() if draw < eval_fraction}
    by_draw = sorted(draws, key=draws.get)
    if eval_fraction > 0 and len(draws) >= 2 and not held:
        held = {by_draw[0]}
    if len(held) == len(draws):
        held.discard(by_draw[-1])
    train = [item for item in items if key(item) not in held]
    evaluation = [item for item in items if key(item) in held]
    return train, evaluation


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------

def build_batch(tokenizer: Any, prompts: list[str], completions: list[str], max_length: int) -> dict:
    """Rendered prompts + completion texts -> input_ids / attention_mask / completion_mask tensors."""
    return build_completion_batch(tokenizer, prompts, completions, max_length)


@dataclass
class PromptCache:
    """Renders each distinct prompt once (chat templates are slow compared with the rest)."""

    tokenizer: Any
    _rendered: dict[str, str] = field(default_factory=dict)

    def __call__(self, messages: Messages) -> str:
        key = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        if key not in self._rendered:
            self._rendered[key] = render_prompt(self.tokenizer, messages)
        return self._rendered[key]


def pair_batch(tokenizer: Any, pairs: Sequence[PreferencePair], max_length: int,
               render: Callable[[Messages], str] | None = None) -> dict:
    """One shared-prefix row per pair; its scores come out ``[chosen_0, rejected_0, chosen_1, ...]``
    (``.view(-1, 2)`` gives one ``[chosen, rejected]`` row per pair)."""
    render = render or (lambda messages: render_prompt(tokenizer, messages))
    prompts = [render(p.prompt_messages) for p in pairs]
    return build_shared_prefix_batch(tokenizer, prompts, [[p.chosen, p.rejected] for p in pairs], max_length)


def ranking_batch(tokenizer: Any, rankings: Sequence[Ranking], max_length: int,
                  render: Callable[[Messages], str] | None = None) -> dict:
    """One shared-prefix row per ranking (score ``b*K + k`` is ranking b's k-th best) plus
    ``ranking_mask`` and ``ranks`` [B, K] (equal ranks are ties).

    Rankings shorter than the longest K are padded with empty completions, masked out.
    """
    render = render or (lambda messages: render_prompt(tokenizer, messages))
    k = max(len(r.completions) for r in rankings)
    prompts, completions, mask, ranks = [], [], [], []
    for ranking in rankings:
        padding = k - len(ranking.completions)
        prompts.append(render(ranking.prompt_messages))
        completions.append(list(ranking.completions) + [""] * padding)
        mask.append([True] * len(ranking.completions) + [False] * padding)
        ranks.append(list(ranking.ranks) + [ranking.ranks[-1]] * padding)
    batch = build_shared_prefix_batch(tokenizer, prompts, completions, max_length)
    batch["ranking_mask"] = torch.tensor(mask, dtype=torch.bool)
    batch["ranks"] = torch.tensor(ranks, dtype=torch.long)
    return batch


def response_batch(tokenizer: Any, prompts_messages: Sequence[Messages], responses: Sequence[str],
                   max_length: int, render: Callable[[Messages], str] | None = None) -> dict:
    """One row per (prompt, response): the reward model's input."""
    render = render or (lambda messages: render_prompt(tokenizer, messages))
    return build_batch(tokenizer, [render(m) for m in prompts_messages], list(responses), max_length)
