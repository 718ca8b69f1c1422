"""Rewards for online RL: user callables, built-in rules, a trained reward model, and their weighted sum.

A reward function has TRL's GRPO signature::

    def my_reward(prompts, completions, **columns) -> list[float | None]

``prompts[i]`` is the prompt of completion ``i`` as the prompt source gave it (a string, or chat
messages), ``completions[i]`` the completion's text; the K completions of a prompt are adjacent,
their prompt repeated. ``columns`` holds the prompt file's other columns (one value per
completion) plus ``prompt_messages``, ``finish_reasons`` (``"stop"``/``"length"``),
``completion_lengths`` (tokens) and ``group_size`` (K); take ``**kwargs`` to ignore them.
``None`` means "does not apply to this completion": it adds nothing to the weighted sum.

Everything a function returns is checked (:func:`checked_values`): an exception, a wrong number of
values, NaN or inf becomes a :class:`RewardError` naming the function and the rollout.
"""
from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["BUILTIN_REWARDS", "RewardError", "RewardModelReward", "WeightedReward", "builtin_reward",
           "checked_values", "combine_rewards", "load_reward_fn", "parse_weighted"]

RewardFunction = Callable[..., Sequence[float | None]]


class RewardError(ValueError):
    """A reward function could not be loaded, or returned something unusable."""


@dataclass(frozen=True)
class WeightedReward:
    """One term of the reward: ``weight · fn(...)``, known to users by ``name``."""

    name: str
    fn: RewardFunction
    weight: float = 1.0


# --------------------------------------------------------------------------------------------
# Loading user functions
# --------------------------------------------------------------------------------------------

def parse_weighted(spec: str) -> tuple[str, float]:
    """``"SPEC"`` or ``"SPEC@WEIGHT"`` -> (SPEC, weight); e.g. ``rules.py:is_polite@0.5``."""
    body, sep, weight = spec.rpartition("@")
    if not sep:
        return spec, 1.0
    try:
        value = float(weight)
    except ValueError:
        return spec, 1.0  # an '@' inside a regex, not a weight
    if not math.isfinite(value):
        raise RewardError(f"reward weight must be finite, got {weight!r} in {spec!r}")
    return body, value


def load_reward_fn(spec: str) -> WeightedReward:
    """``FILE.py:NAME[@WEIGHT]`` -> the callable ``NAME`` defined in ``FILE.py``.

    Checked before any model is loaded: the file exists, imports, and defines a callable ``NAME``.
    """
    spec, weight = parse_weighted(spec)
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name:
        raise RewardError(f"reward function must be given as FILE.py:NAME, got {spec!r}")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise RewardError(f"reward function file not found: {path} (from {spec!r})")
    module_name = f"prefstudio_reward_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardError(f"cannot import {path} as Python (from {spec!r})")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes one clear message
        raise RewardError(f"importing reward file {path} failed: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, name, None)
    if fn is None:
        raise RewardError(f"{path} defines no {name!r} (from {spec!r})")
    if not callable(fn):
        raise RewardError(f"{path}:{name} is not callable")
    return WeightedReward(name=f"{path.name}:{name}", fn=fn, weight=weight)


# --------------------------------------------------------------------------------------------
# Built-in rules
# --------------------------------------------------------------------------------------------

def regex_match(pattern: str) -> RewardFunction:
    """1.0 when the completion contains a match of ``pattern`` (``re.search``), else 0.0."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RewardError(f"bad regex {pattern!r} for the regex reward: {exc}") from exc

    def regex(prompts: Sequence[Any], completions: Sequence[str], **_: Any) -> list[float]:
        return [1.0 if compiled.search(text) else 0.0 for text in completions]

    return regex


def length_target(target: str) -> RewardFunction:
    """``1 − |n − target| / target``, clipped at 0, with ``n`` the completion's length in tokens:
    1 at the target length, 0 at twice it or at nothing."""
    try:
        tokens = int(target)
    except ValueError:
        tokens = 0
    if tokens < 1:
        raise RewardError(f"the length reward needs a target of at least 1 token, got {target!r}")

    def length(prompts: Sequence[Any], completions: Sequence[str], completion_lengths: Sequence[int],
               **_: Any) -> list[float]:
        return [max(0.0, 1 - abs(n - tokens) / tokens) for n in completion_lengths]

    return length


def ends_with_eos(argument: str = "") -> RewardFunction:
    """1.0 when the model ended its answer itself (emitted EOS), 0.0 when cut at the length limit."""
    if argument:
        raise RewardError(f"the eos reward takes no argument, got {argument!r}")

    def eos(prompts: Sequence[Any], completions: Sequence[str], finish_reasons: Sequence[str],
            **_: Any) -> list[float]:
        return [1.0 if reason == "stop" else 0.0 for reason in finish_reasons]

    return eos


#: name -> factory(argument) of the built-in rules: ``regex:PATTERN``, ``length:TOKENS``, ``eos``.
BUILTIN_REWARDS: dict[str, Callable[[str], RewardFunction]] = {
    "regex": regex_match,
    "length": length_target,
    "eos": ends_with_eos,
}


def builtin_reward(spec: str) -> WeightedReward:
    """``NAME[:ARGUMENT][@WEIGHT]``, e.g. ``regex:\\bplease\\b@2``, ``length:40``, ``eos``."""
    spec, weight = parse_weighted(spec)
    name, _, argument = spec.partition(":")
    if name not in BUILTIN_REWARDS:
        raise RewardError(f"unknown built-in reward {name!r}; choose one of {', '.join(BUILTIN_REWARDS)}")
    return WeightedReward(name=spec, fn=BUILTIN_REWARDS[name](argument), weight=weight)


# --------------------------------------------------------------------------------------------
# A reward model trained in the app
# --------------------------------------------------------------------------------------------

class RewardModelReward:
    """A reward model saved by :func:`alignment.training.reward.train_reward_model`, as a reward function.

    It reads text: each prompt is rendered with the reward model's own chat template and every
    completion re-tokenised with its own tokenizer, so a reward model on another base (another
    tokenizer) than the policy works. A prompt's K completions share one packed row (the prompt
    is computed once, :mod:`alignment.packing`).
    """

    def __init__(self, path: str | Path, device: str | None = None, max_length: int = 1024,
                 batch_prompts: int = 4) -> None:
        from alignment.training.reward import load_reward_model

        self.path = Path(path).expanduser()
        if not (self.path / "adapter_config.json").is_file():
            raise RewardError(f"reward model folder {self.path} has no adapter_config.json "
                              f"(train one with `app.py train rm`)")
        self.model, self.tokenizer = load_reward_model(self.path, device=device)
        self.max_length = max_length
        self.batch_prompts = batch_prompts
        self.__name__ = f"reward_model:{self.path.name}"

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], prompt_messages: Sequence[Any],
                 group_size: int, **_: Any) -> list[float]:
        from alignment.chat import render_prompt
        from alignment.packing import PACKED_INPUTS, build_shared_prefix_batch
        from alignment.training.reward import packed_rewards

        device = next(self.model.parameters()).device
        k = group_size
        out: list[float] = []
        step = self.batch_prompts * k
        for start in range(0, len(completions), step):
            messages = prompt_messages[start:start + step:k]
            texts = completions[start:start + step]
            batch = build_shared_prefix_batch(
                self.tokenizer, [render_prompt(self.tokenizer, m) for m in messages],
                [list(texts[i * k:(i + 1) * k]) for i in range(len(messages))], self.max_length)
            out.extend(packed_rewards(self.model, **{key: batch[key].to(device) for key in PACKED_INPUTS}).tolist())
        return out


# --------------------------------------------------------------------------------------------
# Calling and combining
# --------------------------------------------------------------------------------------------

def checked_values(reward: WeightedReward, values: Any, expected: int, rollout: int) -> list[float | None]:
    """``values`` as floats (or None), or a :class:`RewardError` naming the function and rollout."""
    where = f"reward function {reward.name!r} on rollout {rollout}"
    if isinstance(values, Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise RewardError(f"{where} returned {type(values).__name__}; expected a list of {expected} floats or None")
    if len(values) != expected:
        raise RewardError(f"{where} returned {len(values)} values for {expected} completions")
    out: list[float | None] = []
    for i, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RewardError(f"{where} returned {value!r} for completion {i}; expected a float or None")
        if not math.isfinite(value):
            raise RewardError(f"{where} returned {value} for completion {i}; rewards must be finite")
        out.append(float(value))
    return out


def combine_rewards(rewards: Sequence[WeightedReward], prompts: Sequence[Any], completions: Sequence[str],
                    columns: dict[str, Sequence[Any]], rollout: int,
                    truncation_penalty: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """``Σ_f w_f · f(...)`` per completion, ``[N]`` float32, and each function's raw values (NaN where None).

    ``truncation_penalty`` is subtracted from completions cut at the length limit
    (``columns["finish_reasons"] == "length"``). A completion that no function applies to is an error.
    """
    if not rewards:
        raise RewardError("no reward: give a reward model, a reward function or a built-in rule")
    n = len(completions)
    total = torch.zeros(n, dtype=torch.float32)
    applied = torch.zeros(n, dtype=torch.bool)
    per_function: dict[str, Tensor] = {}
    for reward in rewards:
        try:
            raw = reward.fn(list(prompts), list(completions), **columns)
        except RewardError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: report which function and which rollout
            raise RewardError(f"reward function {reward.name!r} raised on rollout {rollout}: "
                              f"{type(exc).__name__}: {exc}") from exc
        values = checked_values(reward, raw, n, rollout)
        column = torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float32)
        per_function[reward.name] = column
        present = ~column.isnan()
        total += reward.weight * torch.nan_to_num(column, nan=0.0)
        applied |= present
    if not applied.all():
        missing = int((~applied).nonzero()[0])
        raise RewardError(f"on rollout {rollout} no reward function gave a value (all None) for completion {missing}")
    if truncation_penalty:
        cut = torch.tensor([reason == "length" for reason in columns.get("finish_reasons", [])] or [False] * n)
        total -= truncation_penalty * cut.float()
    return total, per_function
