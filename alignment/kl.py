"""The per-token KL estimate of a tuned policy to its base, on one sampled answer (comparison,
evaluation)::

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
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from alignment.adapters import base_weights, policy_weights
from alignment.logprobs import completion_token_logps
from alignment.rl.kl import k3


def k3_per_token(policy_logps: Tensor, base_logps: Tensor) -> Tensor:
    """``(r - 1) - log r`` per token with ``log r = log π_base(y_t) - log π(y_t)`` (k3, non-negative),
    in float64: :func:`alignment.rl.kl.k3`, the one k3 of the project."""
    return k3(policy_logps.double(), base_logps.double())


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
        with policy_weights(model, adapter_name):
            policy = completion_token_logps(model, *batch)
        with base_weights(model):
            base = completion_token_logps(model, *batch)
    finally:
        model.train(was_training)
    return float(k3_per_token(policy, base).mean())

