"""Drawing K candidate responses per prompt: the data to compare in preference collection.

This module owns the sampling settings (:class:`SamplingParams`), the result type
(:class:`Sample`), the engine interface (:class:`GenerationBackend`) and the default engine built
on Hugging Face transformers (:class:`TransformersBackend`), which batches all K x prompts rows
through ``model.generate`` with left padding.
"""
from __future__ import annotations

import abc
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from alignment.chat import Messages, render_prompt
from alignment.models import DEFAULT_MODEL, LoadedModel, get_model

log = logging.getLogger(__name__)

MAX_NEW_TOKENS_LIMIT = 4096

FinishReason = Literal["stop", "length"]


# --------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True as a token count or seed is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding (``top_p`` is then ignored)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(
                f"max_new_tokens must be an integer between 1 and {MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens!r}"
            )
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The settings in words, e.g. "temperature 0.7, top-p 0.95, at most 128 new tokens"."""
        how = "greedy decoding" if self.greedy else f"temperature {self.temperature:g}, top-p {self.top_p:g}"
        return f"{how}, at most {self.max_new_tokens} new tokens"


@dataclass
class Sample:
    """One generated response.

    ``num_tokens`` counts generated tokens, excluding padding and the end-of-sequence token;
    ``finish_reason`` is ``"stop"`` when the model ended its reply, ``"length"`` when it was cut
    off at ``max_new_tokens``. ``token_ids`` are the generated ids (without the stop token) when
    the engine knows them: online RL scores exactly the tokens that were sampled, which decoding
    and re-tokenising the text would not always give back.
    """

    text: str
    num_tokens: int
    finish_reason: FinishReason
    token_ids: list[int] = field(default_factory=list, compare=False, repr=False)


# --------------------------------------------------------------------------------------------
# Engine interface
# --------------------------------------------------------------------------------------------

class GenerationBackend(abc.ABC):
    """An engine that draws K responses for each of several chat prompts.

    To plug in another engine (vLLM, llama.cpp, a remote API), subclass this, set ``name`` and
    implement :meth:`sample`: render each conversation with the model's chat template (see
    :func:`alignment.chat.render_prompt`), ask the engine for ``k`` completions per prompt (vLLM:
    ``SamplingParams(n=k, temperature=..., top_p=..., max_tokens=..., seed=...)``), and map each
    completion to a :class:`Sample` (its token count and whether it stopped or hit the limit).
    Callers depend only on this interface, so engines are interchangeable.
    """

    name: str

    @abc.abstractmethod
    def sample(self, prompts: list[Messages], k: int, params: SamplingParams) -> list[list[Sample]]:
        """``k`` samples for each prompt: ``result[i][j]`` is the j-th sample for ``prompts[i]``."""


# --------------------------------------------------------------------------------------------
# Hugging Face transformers engine
# --------------------------------------------------------------------------------------------

class TransformersBackend(GenerationBackend):
    """Batched sampling with ``model.generate``: each prompt is repeated K times and the rows are
    generated together, up to ``max_batch_rows`` at a time. That is much faster than one call per
    response: a decoding step over 8 rows costs far less than 8 single-row steps, because per-step
    overhead and reading the weights dominate for small models.
    """

    def __init__(self, loaded: LoadedModel, max_batch_rows: int = 8) -> None:
        if not _is_int(max_batch_rows) or max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be a positive integer, got {max_batch_rows!r}")
        self.loaded = loaded
        self.max_batch_rows = max_batch_rows
        self.name = f"transformers:{loaded.name}"
        self._stop_ids = self._find_stop_ids()

    # -- public API ------------------------------------------------------------------------

    def sample(self, prompts: list[Messages], k: int, params: SamplingParams) -> list[list[Sample]]:
        if not _is_int(k) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        prompt_ids = [self.prompt_ids(messages, params) for messages in prompts]
        # Rows of the same prompt stay adjacent, so most batches need little or no padding.
        rows = [ids for ids in prompt_ids for _ in range(k)]

        flat: list[Sample] = []
        with self.loaded.lock:
            for batch_index, start in enumerate(range(0, len(rows), self.max_batch_rows)):
                batch = rows[start:start + self.max_batch_rows]
                flat.extend(self._generate_batch(batch, params, batch_index))
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    # -- steps -----------------------------------------------------------------------------

    def prompt_ids(self, messages: Messages, params: SamplingParams) -> list[int]:
        """Token ids of the rendered prompt, left-truncated to leave room for the reply."""
        tokenizer = self.loaded.tokenizer
        # The chat template already contains the special tokens the model expects.
        ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        context = self.loaded.context_length
        if context is None:
            return ids
        budget = context - params.max_new_tokens
        if budget < 1:
            raise ValueError(
                f"max_new_tokens={params.max_new_tokens} leaves no room for the prompt in this model's "
                f"{context}-token context"
            )
        if len(ids) > budget:
            # Keep the end: the latest turns and the assistant header matter most for the reply.
            log.warning("Prompt of %d tokens exceeds the %d-token budget (context %d - max_new_tokens %d); "
                        "dropping its first %d tokens", len(ids), budget, context, params.max_new_tokens,
                        len(ids) - budget)
            ids = ids[-budget:]
        return ids

    def _generate_batch(self, rows: list[list[int]], params: SamplingParams, batch_index: int) -> list[Sample]:
        tokenizer = self.loaded.tokenizer
        inputs = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt").to(self.loaded.device)
        if params.seed is not None:
            # Offset by batch index: batches holding identical rows must not repeat each other,
            # while the same inputs and seed still reproduce the same outputs.
            torch.manual_seed(params.seed + batch_index)
        with torch.inference_mode():
            output = self.loaded.model.generate(**inputs, **self._generate_kwargs(params))
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._to_sample(tokens) for tokens in new_tokens]

    def _generate_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.loaded.tokenizer.pad_token_id,
            "eos_token_id": sorted(self._stop_ids),
            # Training copies of a model switch the cache off in their config; decoding needs it.
            "use_cache": True,
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            # top_k=None: the library default (50) would otherwise quietly cut the distribution.
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
        return kwargs

    def _find_stop_ids(self) -> set[int]:
        """End-of-sequence ids from the tokenizer and the model's generation config."""
        ids: set[int] = set()
        for value in (self.loaded.tokenizer.eos_token_id,
                      getattr(self.loaded.model.generation_config, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(value)
        return ids

    def _to_sample(self, tokens: list[int]) -> Sample:
        """Trim a generated row at its first stop token; what follows it is padding.

        ``generate`` pads only rows that already stopped, so a row without a stop token ran the
        full ``max_new_tokens`` and holds no padding (this holds even when pad == eos).
        """
        end = next((i for i, token in enumerate(tokens) if token in self._stop_ids), None)
        generated = tokens if end is None else tokens[:end]
        reason: FinishReason = "length" if end is None else "stop"
        text = self.loaded.tokenizer.decode(generated, skip_special_tokens=True)
        return Sample(text=text, num_tokens=len(generated), finish_reason=reason, token_ids=list(generated))


def backend_for(spec: str = DEFAULT_MODEL, max_batch_rows: int = 8, device: str | None = None) -> TransformersBackend:
    """A :class:`TransformersBackend` on the shared instance of model ``spec``."""
    return TransformersBackend(get_model(spec, device), max_batch_rows=max_batch_rows)
