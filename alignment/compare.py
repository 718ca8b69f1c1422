"""Side by side: several models answer the same prompt with the same seed, with diagnostics per answer.

This module owns

* :class:`ModelRef`: one column of a comparison (a base model spec, optionally a LoRA adapter
  folder, and the label shown above the column);
* :func:`answer_side_by_side`: every model answers the same prompt with the same seed and sampling
  parameters, either in one ``generate`` call whose rows use different adapters (every adapter
  active, each one's LoRA term masked to its own rows: :mod:`alignment.row_masked_lora`) or one
  model after the other (the baseline); each :class:`Answer` carries its reward-model score,
  length and per-token KL to the base (:func:`alignment.kl.per_token_kl`).

Its parts, one concern each: :mod:`alignment.comparison_model` (one base with every compared
adapter attached, cached), :mod:`alignment.shared_noise` (the same random numbers in every row, so
a model's answer in a batch is the one it gives alone with that seed), :mod:`alignment.row_masked_lora`
(one forward pass, each row with its own adapter), :mod:`alignment.kl` (the KL estimate),
:mod:`alignment.adapters` (switching between adapters and the base). Adapters that cannot be row
masked go through PEFT's mixed adapter batches (``generate(..., adapter_names=[...])``); there (peft
0.21) the model must be in eval mode, no adapter may be merged into the weights, and DoRA adapters
are refused. No database, no UI: callers pass model specs, adapter folders and messages.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignment.adapters import BASE, is_peft, policy_weights
from alignment.chat import Messages, validate_messages
from alignment.comparison_model import get_comparison_model, shared_base
from alignment.kl import per_token_kl
from alignment.models import DEFAULT_MODEL
from alignment.row_masked_lora import row_maskable, row_masked_adapters
from alignment.sampling import FinishReason, Sample, SamplingParams, TransformersBackend
from alignment.shared_noise import SharedNoiseSampling


@dataclass(frozen=True)
class ModelRef:
    """One column: ``model`` (a spec as in :func:`alignment.models.resolve_model_spec`), optionally
    with a LoRA ``adapter`` folder trained on it, shown under ``label``."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    label: str | None = None

    @property
    def display_label(self) -> str:
        if self.label:
            return self.label
        if self.adapter:
            return Path(self.adapter).name
        return self.model


@dataclass
class Answer:
    """One model's answer to the compared prompt.

    ``num_tokens`` excludes the stop token; ``seconds`` is the wall time of the ``generate`` call
    that produced the answer (batched: the whole batch's, the same for every answer);
    ``rm_score`` is None without a reward model; ``kl_to_base`` is :func:`per_token_kl` over the
    answer's tokens (0.0 for the base itself).
    """

    label: str
    model: str
    adapter: str | None
    text: str
    num_tokens: int
    finish_reason: FinishReason
    seconds: float
    seed: int
    rm_score: float | None = None
    kl_to_base: float = 0.0



@dataclass
class _Generation:
    sample: Sample
    token_ids: list[int]  # sampled tokens, the stop token included when the answer stopped
    seconds: float



class SideBySideBackend(TransformersBackend):
    """:class:`TransformersBackend` rows that differ by adapter rather than by prompt (call under the lock)."""

    def generate_batched(self, prompt_ids: list[int], adapter_names: list[str], params: SamplingParams,
                         seed: int) -> list[_Generation]:
        """One ``generate`` call, row i answering with adapter ``adapter_names[i]``.

        Plain LoRA adapters run row-masked (:func:`row_masked_adapters`); others through PEFT's
        mixed adapter batch (``generate(..., adapter_names=...)``). Both give each row its own
        model's outputs.
        """
        model, rows = self.loaded.model, len(adapter_names)
        if not is_peft(model):
            if set(adapter_names) != {BASE}:
                raise ValueError(f"no adapters are attached, cannot answer with {sorted(set(adapter_names) - {BASE})}")
            return self._generate(prompt_ids, rows, params, seed)
        if not row_maskable(model, adapter_names):
            return self._generate(prompt_ids, rows, params, seed, adapter_names=list(adapter_names))
        with row_masked_adapters(model, adapter_names):
            return self._generate(prompt_ids, rows, params, seed)

    def generate_alone(self, prompt_ids: list[int], adapter_name: str, params: SamplingParams,
                       seed: int) -> _Generation:
        """One row, the model switched to ``adapter_name`` the ordinary PEFT way (the baseline)."""
        with policy_weights(self.loaded.model, adapter_name):
            return self._generate(prompt_ids, 1, params, seed)[0]

    def _generate(self, prompt_ids: list[int], rows: int, params: SamplingParams, seed: int,
                  **extra: Any) -> list[_Generation]:
        input_ids = torch.tensor([prompt_ids] * rows, dtype=torch.long, device=self.loaded.device)
        kwargs = {**self._shared_noise_kwargs(params, seed), **extra}
        start = time.perf_counter()
        with torch.inference_mode():
            output = self.loaded.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                                **kwargs)
        seconds = time.perf_counter() - start
        return [self._generation(row, seconds) for row in output[:, len(prompt_ids):].tolist()]

    def _shared_noise_kwargs(self, params: SamplingParams, seed: int) -> dict[str, Any]:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        kwargs = self._generate_kwargs(params)
        if params.greedy:
            return kwargs
        # Temperature, then top-p (transformers' own order), then the per-row noise; the final
        # argmax is greedy search's. do_sample=False keeps generate from adding its own warpers.
        processors: list[Any] = [TemperatureLogitsWarper(params.temperature)]
        if params.top_p < 1:
            processors.append(TopPLogitsWarper(params.top_p))
        processors.append(SharedNoiseSampling(seed, self.loaded.device))
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                      logits_processor=LogitsProcessorList(processors))
        return kwargs

    def _generation(self, tokens: list[int], seconds: float) -> _Generation:
        sample = self._to_sample(tokens)
        stopped = sample.finish_reason == "stop"
        return _Generation(sample, tokens[:sample.num_tokens + (1 if stopped else 0)], seconds)



# --------------------------------------------------------------------------------------------
# Side by side
# --------------------------------------------------------------------------------------------

def _seed_for(seed: int | None, params: SamplingParams) -> int:
    """The comparison's seed: the given one, else the sampling params', else a fresh one (recorded
    on every answer, so the comparison can be replayed)."""
    if seed is None:
        seed = params.seed
    if seed is None:
        seed = random.randrange(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return seed


def answer_side_by_side(refs: Sequence[ModelRef], messages: Messages, params: SamplingParams,
                        seed: int | None = None, reward: Any = None, batched: bool = True,
                        device: str | None = None) -> list[Answer]:
    """Every model in ``refs`` answers ``messages`` with the same seed and ``params``, in order.

    ``batched``: one ``generate`` call with one row per model (mixed adapter batch); otherwise one
    model after the other, each switched on the ordinary PEFT way (``set_adapter`` /
    ``disable_adapter``: the baseline). The answers are the same either way (see the module
    docstring). ``reward`` is a loaded reward model (``(model, tokenizer)``, as
    :func:`alignment.training.reward.load_reward_model` returns), scoring every answer when given.
    """
    validate_messages(messages)
    seed = _seed_for(seed, params)
    base = shared_base([r.model for r in refs])
    compared = get_comparison_model(base, [r.adapter for r in refs if r.adapter], device)
    backend = SideBySideBackend(compared.loaded)
    with compared.loaded.lock:
        names = [compared.adapter_name(r.adapter) for r in refs]
        prompt_ids = backend.prompt_ids(messages, params)
        if batched:
            generations = backend.generate_batched(prompt_ids, names, params, seed)
        else:
            generations = [backend.generate_alone(prompt_ids, name, params, seed) for name in names]
        kls = [0.0 if name == BASE else per_token_kl(compared.loaded.model, prompt_ids, g.token_ids, name)
               for name, g in zip(names, generations)]
    scores = _reward_scores(reward, messages, [g.sample.text for g in generations])
    return [Answer(label=ref.display_label, model=ref.model, adapter=ref.adapter, text=g.sample.text,
                   num_tokens=g.sample.num_tokens, finish_reason=g.sample.finish_reason, seconds=g.seconds,
                   seed=seed, rm_score=s, kl_to_base=kl)
            for ref, g, s, kl in zip(refs, generations, scores, kls)]


def _reward_scores(reward: Any, messages: Messages, texts: list[str]) -> list[float | None]:
    if reward is None:
        return [None] * len(texts)
    from alignment.training.reward import score

    model, tokenizer = reward
    return score(model, tokenizer, [messages] * len(texts), texts)

