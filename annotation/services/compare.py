"""Side by side: the picked models (:mod:`annotation.services.catalogue`) answer one prompt with the
same seed and sampling parameters (alignment.compare), with reward-model scores when a reward model
is picked.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from annotation.services.catalogue import ModelOption
from annotation.services.paths import check_reward_model
from storage.errors import InputError

MAX_MODELS = 6


@lru_cache(maxsize=2)
def _reward_model(path: str) -> Any:
    from alignment.training.reward import load_reward_model

    return load_reward_model(path)


def sampling_params(temperature: float, top_p: float, max_new_tokens: int, seed: int | None) -> Any:
    """alignment.sampling.SamplingParams, with bad values as InputError."""
    from alignment.sampling import SamplingParams

    try:
        return SamplingParams(temperature=float(temperature), top_p=float(top_p),
                              max_new_tokens=int(max_new_tokens), seed=None if seed is None else int(seed))
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None


def answer(options: list[ModelOption], messages: list[dict[str, str]], params: Any, seed: int | None = None,
           reward: str | None = None) -> list[Any]:
    """Every option answers ``messages`` with the same seed and ``params`` (alignment.compare.Answer
    each, in order: text, tokens, finish reason, seconds, seed, RM score when ``reward`` names a
    reward-model folder, per-token KL to the base). Bad picks or a model that does not load raise
    InputError."""
    from alignment.compare import ModelRef, answer_side_by_side

    if not options:
        raise InputError("pick the models to compare")
    if len(options) > MAX_MODELS:
        raise InputError(f"compare at most {MAX_MODELS} models at once")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InputError(f"seed must be a whole number >= 0 (or empty for a random one), got {seed!r}")
    refs = [ModelRef(model=o.model, adapter=o.adapter, label=o.name) for o in options]
    reward_dir = check_reward_model(str(reward)) if reward else None
    try:
        loaded_reward = _reward_model(str(reward_dir)) if reward_dir else None
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot load the reward model {reward}: {exc}") from None
    try:
        return answer_side_by_side(refs, messages, params, seed=seed, reward=loaded_reward)
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot answer side by side: {exc}") from None
