"""Best-of-N sampling: draw N responses per prompt from a policy and keep the one a reward model scores highest.

This module owns

* the result types (:class:`Candidate`, :class:`BestOfN`);
* :func:`best_of_n`: sample with any :class:`~alignment.sampling.GenerationBackend`, score every
  candidate with a reward model from :func:`alignment.training.reward.load_reward_model`, pick the
  argmax (the first one on a tie);
* :func:`policy_backend`: a :class:`~alignment.sampling.TransformersBackend` on a base model,
  optionally with a LoRA adapter (e.g. from ``app.py train dpo``) merged into its own copy of the
  weights;
* :class:`BestOfNConfig` (defined in :mod:`alignment.run_configs`, light for the command line):
  the settings of a best-of-N run over a prompt file.

It is pure computation: no database, no files other than the model folders it loads.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignment.chat import Messages, validate_messages
from alignment.models import DEFAULT_MODEL, LoadedModel, load_model
from alignment.run_configs import adapter_base_model, check_adapter_dir
from alignment.sampling import GenerationBackend, SamplingParams, TransformersBackend, backend_for

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One sampled response and its reward (``finish_reason``: "stop" or "length", as sampled)."""

    text: str
    score: float
    num_tokens: int
    finish_reason: str | None = None


@dataclass
class BestOfN:
    """The N candidates drawn for one prompt; ``candidates[best_index]`` has the highest score.

    ``seed`` is the sampling seed of the call that drew these candidates (None when unseeded):
    with the same prompts, N and settings it reproduces them.
    """

    prompt_messages: Messages
    candidates: list[Candidate]
    best_index: int
    seed: int | None = None

    @property
    def best(self) -> Candidate:
        return self.candidates[self.best_index]

    @property
    def scores(self) -> list[float]:
        return [c.score for c in self.candidates]

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.candidates]


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one when several are equal."""
    if not values:
        raise ValueError("argmax of an empty sequence")
    return max(range(len(values)), key=lambda i: values[i])


def best_of_n(prompts: list[Messages], n: int, params: SamplingParams, policy_backend: GenerationBackend,
              reward_model: Any, reward_tokenizer: Any, batch_size: int = 8, *,
              prompts_per_call: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[BestOfN]:
    """Sample ``n`` candidates for each prompt, score them all, and mark the best one per prompt.

    Prompts go to the backend ``prompts_per_call`` at a time (default: as many as fill one
    generation batch of ``n`` rows each), and the candidates of each call are scored right away in
    reward batches of ``batch_size``; ``progress(done, total)`` is called before the first call and
    after each one.

    With ``params.seed`` set, each call gets its own seed drawn from it (recorded on its results),
    so a run is reproducible while calls never repeat each other's randomness.
    """
    from alignment.training.reward import score

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for index, messages in enumerate(prompts):
        try:
            validate_messages(messages)
        except ValueError as exc:
            raise ValueError(f"prompt {index + 1}: {exc}") from None
    if prompts_per_call is None:
        rows = getattr(policy_backend, "max_batch_rows", n)
        prompts_per_call = max(1, rows // n)
    elif isinstance(prompts_per_call, bool) or not isinstance(prompts_per_call, int) or prompts_per_call < 1:
        raise ValueError(f"prompts_per_call must be a positive integer, got {prompts_per_call!r}")

    rng = random.Random(params.seed)
    results: list[BestOfN] = []
    if progress is not None:
        progress(0, len(prompts))
    for start in range(0, len(prompts), prompts_per_call):
        chunk = prompts[start:start + prompts_per_call]
        call_params = params if params.seed is None else replace(params, seed=rng.randrange(2**31))
        samples = policy_backend.sample(chunk, n, call_params)
        if len(samples) != len(chunk) or any(len(row) != n for row in samples):
            raise RuntimeError(f"backend {getattr(policy_backend, 'name', policy_backend)!r} returned the wrong "
                               f"number of samples (expected {n} for each of {len(chunk)} prompts)")
        flat_prompts = [messages for messages in chunk for _ in range(n)]
        flat_texts = [sample.text for row in samples for sample in row]
        flat_scores = score(reward_model, reward_tokenizer, flat_prompts, flat_texts, batch_size=batch_size)
        for i, (messages, row) in enumerate(zip(chunk, samples)):
            row_scores = [float(s) for s in flat_scores[i * n:(i + 1) * n]]
            candidates = [Candidate(text=sample.text, score=s, num_tokens=sample.num_tokens,
                                    finish_reason=sample.finish_reason) for sample, s in zip(row, row_scores)]
            results.append(BestOfN(prompt_messages=messages, candidates=candidates, best_index=argmax(row_scores),
                                   seed=call_params.seed))
        if progress is not None:
            progress(len(results), len(prompts))
    return results


# --------------------------------------------------------------------------------------------
# The policy: a base model, optionally with a LoRA adapter
# --------------------------------------------------------------------------------------------

def load_policy_with_adapter(model_spec: str, adapter: str | Path, device: str | None = None,
                             merge: bool = True) -> LoadedModel:
    """A private copy of ``model_spec`` with the LoRA ``adapter`` applied (merged into the weights by default).

    The shared instances of :func:`alignment.models.get_model` are never modified.
    """
    from peft import PeftModel

    path = check_adapter_dir(adapter)
    loaded = load_model(model_spec, device)
    try:
        model = PeftModel.from_pretrained(loaded.model, str(path))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"adapter {path} does not fit model {model_spec!r} (was it trained on another base "
                         f"model?): {exc}") from exc
    if merge:
        model = model.merge_and_unload()
    model.to(loaded.device)
    model.eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, spec=model_spec,
                       name=f"{loaded.name}+{path.resolve().name}", device=loaded.device)


def policy_backend(model_spec: str | None = DEFAULT_MODEL, adapter: str | Path | None = None,
                   max_batch_rows: int = 8, device: str | None = None) -> TransformersBackend:
    """A generation backend for the policy: ``model_spec`` alone, or with a LoRA ``adapter``.

    Without an adapter this is the shared model instance (:func:`alignment.sampling.backend_for`).
    With one, ``model_spec`` may be None: the adapter's own base model is used
    (:func:`adapter_base_model`), falling back to the default model.
    """
    if adapter is None:
        return backend_for(model_spec or DEFAULT_MODEL, max_batch_rows=max_batch_rows, device=device)
    check_adapter_dir(adapter)
    spec = model_spec or adapter_base_model(adapter) or DEFAULT_MODEL
    log.info("loading policy %s with adapter %s", spec, adapter)
    return TransformersBackend(load_policy_with_adapter(spec, adapter, device), max_batch_rows=max_batch_rows)
