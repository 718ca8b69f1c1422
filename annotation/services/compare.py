"""Side by side: which models can be compared (the base model and the trained policy adapters), and
having them answer one prompt with the same seed and sampling parameters (alignment.compare), with
reward-model scores when a reward model is picked.

A model is picked by a key: ``base:<spec>`` for a base model alone, ``trained:<id>`` for a trained
policy adapter (on the base model it was trained on). Keys keep model paths out of the browser's
choices and let a stale choice (a deleted model) fail with a clear message. Its name is the one the
arena's leaderboard uses (:func:`annotation.services.arena.display_name`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import select

from alignment.run_folder import ModelKind
from annotation.services.arena import display_name, trained_adapter_names
from storage.db import Database, transaction
from storage.errors import InputError
from storage.models import TrainedModel

MAX_MODELS = 6


@dataclass(frozen=True)
class ModelOption:
    key: str  # base:<spec> | trained:<id>
    name: str  # shown in the UI, at the arena's reveal and on the leaderboard
    model: str  # base model spec
    adapter: str | None = None  # adapter folder, None for the base model alone


def model_options(db: Database, default_model: str = "default") -> list[ModelOption]:
    """The base model(s) and every trained policy adapter: the app's base model first, then each other
    base an adapter was trained on, then the adapters, newest first."""
    with transaction(db) as s:
        adapters = s.scalars(select(TrainedModel).where(TrainedModel.kind == ModelKind.POLICY_ADAPTER)
                             .order_by(TrainedModel.id.desc())).all()
        trained = trained_adapter_names(s)
    bases = list(dict.fromkeys([default_model, *(m.base_model for m in adapters)]))
    options = [ModelOption(f"base:{spec}", display_name(spec, None), spec) for spec in bases]
    options += [ModelOption(f"trained:{m.id}", display_name(m.base_model, m.path, trained), m.base_model, m.path)
                for m in adapters]
    return options


def resolve_models(db: Database, keys: list[str], default_model: str = "default") -> list[ModelOption]:
    """The options for these keys, in order; InputError for none picked, an unknown key or a repeat."""
    keys = [k for k in (keys or []) if k]
    if not keys:
        raise InputError("pick the models to compare")
    options = {o.key: o for o in model_options(db, default_model)}
    picked = []
    for key in keys:
        if key not in options:
            raise InputError(f"unknown model {key!r}: refresh the list (was it deleted?)")
        option = options[key]
        if option in picked:
            raise InputError(f"{option.name} is picked twice: pick different models")
        picked.append(option)
    return picked


def reward_options(db: Database) -> list[tuple[str, str]]:
    """(label, folder) of every trained reward model, newest first."""
    with transaction(db) as s:
        rows = s.execute(select(TrainedModel.name, TrainedModel.job_id, TrainedModel.path)
                         .where(TrainedModel.kind == ModelKind.REWARD_MODEL).order_by(TrainedModel.id.desc())).all()
    return [(f"{name} (job {job})", path) for name, job, path in rows]


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
    try:
        loaded_reward = _reward_model(str(reward)) if reward else None
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot load the reward model {reward}: {exc}") from None
    try:
        return answer_side_by_side(refs, messages, params, seed=seed, reward=loaded_reward)
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"cannot answer side by side: {exc}") from None
