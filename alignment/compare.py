"""Side by side: several models answer the same prompt with the same seed, with diagnostics per answer.

This module owns

* :class:`ModelRef`: one column of a comparison (a base model spec, optionally a LoRA adapter
  folder, and the label shown above the column);
* :class:`ComparisonModel` and :func:`get_comparison_model`: ONE private copy of the base model
  with every compared LoRA adapter attached under its own name (PEFT multi-adapter), checked to
  have been trained on that base, cached per (base, device) like :func:`alignment.models.get_model`;
* :func:`answer_side_by_side`: every model answers the same prompt with the same seed and sampling
  parameters, either in one ``generate`` call whose rows use different adapters (PEFT's mixed
  adapter batches: ``generate(..., adapter_names=["__base__", "adapter_1", ...])``) or one model
  after the other (the baseline); each :class:`Answer` carries its reward-model score, length and
  per-token KL to the base;
* :func:`per_token_kl`: the per-token KL estimate of a tuned policy to its base on one sampled
  answer. Other jobs (evaluation) import it::

      per_token_kl(model, prompt_ids, completion_ids, adapter_name=None) -> float

  ``model`` is a PEFT model (base weights + LoRA adapters; with adapters disabled it is the base)
  or a plain transformers model (then the policy *is* the base and the estimate is 0);
  ``adapter_name`` picks the policy among its adapters (None: the active one, ``"__base__"``: the
  base itself); ``prompt_ids`` are the rendered prompt's token ids and ``completion_ids`` the
  answer's sampled token ids (include the stop token when the answer stopped: stopping is a
  decision of the policy too). It returns the mean over the answer's tokens of Schulman's k3
  estimator (http://joschu.net/blog/kl-approx.html)::

      k3_t = (r_t - 1) - log r_t,   r_t = π_base(y_t | x, y_<t) / π(y_t | x, y_<t)

  Each k3_t is >= 0 (since log r <= r - 1), exactly 0 when both models agree on the token, and its
  expectation over y_t ~ π(. | x, y_<t) is KL(π(. | x, y_<t) || π_base(. | x, y_<t)); the mean is
  therefore an unbiased estimate of the per-token KL when the answer was sampled from π itself
  (temperature 1, top_p 1); with other settings (greedy, temperature, top-p) it is the same
  quantity along the answer actually shown, a diagnostic rather than an unbiased estimate. Token
  log-probs come from :func:`alignment.logprobs.completion_token_logps`, which runs the LM head
  only on the answer's positions (no full-vocabulary log-softmax over the whole sequence).

Same seed, batched or not. Sampling draws its randomness per row from a generator of its own,
seeded with the comparison's seed (Gumbel-max sampling: ``argmax(logits / T + Gumbel noise)``
after top-p filtering, which samples exactly from the temperature / top-p distribution). Every
model thus sees the same random numbers ("common random numbers"): identical models give
identical answers, differences between answers come from the models rather than the dice, and a
model's answer in a batch is the one it gives alone with that seed, up to floating-point
differences between batch shapes. (Plain ``generate(do_sample=True)`` would draw all rows from
one stream, so row i of a batch would get other numbers than the same model alone.) The seeded
stream is not the one :class:`alignment.sampling.TransformersBackend` uses, so an answer here need
not equal the annotation queue's sample with the same seed.

Limits of mixed adapter batches (peft 0.21): the model must be in eval mode, no adapter may be
merged into the weights, and DoRA adapters are refused; plain LoRA adapters, as prefstudio trains
them, work. No database, no UI: callers pass model specs, adapter folders and messages.
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.chat import Messages, validate_messages
from alignment.logprobs import completion_token_logps
from alignment.models import DEFAULT_MODEL, LoadedModel, default_device, load_model
from alignment.sampling import FinishReason, Sample, SamplingParams, TransformersBackend

log = logging.getLogger(__name__)

#: PEFT's name for "no adapter" in mixed-adapter batches: the row runs on the base weights.
BASE = "__base__"

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_CONFIG = "training_config.json"


# --------------------------------------------------------------------------------------------
# Per-token KL to the base (Schulman's k3)
# --------------------------------------------------------------------------------------------

def k3_per_token(policy_logps: Tensor, base_logps: Tensor) -> Tensor:
    """``(r - 1) - log r`` per token with ``log r = log π_base(y_t) - log π(y_t)`` (k3, non-negative).

    ``expm1`` keeps ``r - 1`` exact for tiny log-ratios, where k3 ~ (log r)^2 / 2.
    """
    log_ratio = base_logps.double() - policy_logps.double()
    return torch.expm1(log_ratio) - log_ratio


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def _policy_weights(model: Any, adapter_name: str | None) -> Iterator[None]:
    """The model as the policy: ``adapter_name`` active (None: as it is, ``BASE``: adapters off)."""
    if adapter_name == BASE and _is_peft(model):
        with model.disable_adapter():
            yield
        return
    if adapter_name in (None, BASE) or not _is_peft(model):
        yield
        return
    if adapter_name not in model.peft_config:
        raise ValueError(f"no adapter named {adapter_name!r}; loaded: {', '.join(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(adapter_name, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous, inference_mode=True)


def _base_weights(model: Any) -> contextlib.AbstractContextManager:
    return model.disable_adapter() if _is_peft(model) else contextlib.nullcontext()


@torch.no_grad()
def per_token_kl(model: Any, prompt_ids: Sequence[int], completion_ids: Sequence[int],
                 adapter_name: str | None = None) -> float:
    """Mean k3 estimate of KL(π || π_base) per answer token (see the module docstring).

    ``π`` is ``model`` with ``adapter_name`` active, ``π_base`` the same model with its adapters
    disabled. Two forward passes over ``prompt + completion`` (policy, then base), in eval mode
    (LoRA dropout off); the model's train/eval mode and active adapter are restored afterwards.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: the first answer token needs a prompt position to be scored from")
    if not completion_ids:
        return 0.0
    device = next(model.parameters()).device
    input_ids = torch.tensor([[*prompt_ids, *completion_ids]], dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[:, len(prompt_ids):] = 1
    batch = (input_ids, attention_mask, completion_mask)

    was_training = model.training
    model.eval()
    try:
        with _policy_weights(model, adapter_name):
            policy = completion_token_logps(model, *batch)
        with _base_weights(model):
            base = completion_token_logps(model, *batch)
    finally:
        model.train(was_training)
    return float(k3_per_token(policy, base).mean())
