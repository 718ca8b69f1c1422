"""Side by side: several models answer the same prompt with the same seed, with diagnostics per answer.

This module owns

* :class:`ModelRef`: one column of a comparison (a base model spec, optionally a LoRA adapter
  folder, and the label shown above the column);
* :class:`ComparisonModel` and :func:`get_comparison_model`: ONE private copy of the base model
  with every compared LoRA adapter attached under its own name (PEFT multi-adapter), checked to
  have been trained on that base, cached per (base, device) like :func:`alignment.models.get_model`;
* :func:`answer_side_by_side`: every model answers the same prompt with the same seed and sampling
  parameters, either in one ``generate`` call whose rows use different adapters (every adapter
  active, each one's LoRA term masked to its own rows; see "Batched rows" below) or one model
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

Same seed, batched or not. Sampling draws its randomness from a generator seeded with the
comparison's seed, one noise vector per step added to every row (Gumbel-max sampling:
``argmax(logits / T + Gumbel noise)`` after top-p filtering, which samples exactly from the
temperature / top-p distribution). Every model thus sees the same random numbers ("common random
numbers"), in a batch of any size as alone: identical models give identical answers,
differences between answers come from the models rather than the dice, and a model's answer in a
batch is the one it gives alone with that seed, up to floating-point differences between batch
shapes. (Plain ``generate(do_sample=True)`` would draw all rows from one stream, so row i of a
batch would get other numbers than the same model alone.) The seeded
stream is not the one :class:`alignment.sampling.TransformersBackend` uses, so an answer here need
not equal the annotation queue's sample with the same seed.

Batched rows. Plain LoRA adapters on linear layers, as prefstudio trains them, run row-masked
(:func:`_row_masked_adapters`): every adapter of the batch is active and each one's LoRA scaling
becomes a per-row tensor, ``scaling`` on its rows and 0 elsewhere, so a batch costs the base's
forward pass plus each adapter's LoRA ops once. Other adapters go through PEFT's mixed adapter
batches (``generate(..., adapter_names=["__base__", "adapter_1", ...])``), which gather and
scatter each adapter's rows in every LoRA layer, slower on the CPU; there (peft 0.21) the model
must be in eval mode, no adapter may be merged into the weights, and DoRA adapters are refused.
No database, no UI: callers pass model specs, adapter folders and messages.
"""
from __future__ import annotations

import contextlib
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
from alignment.run_folder import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_json, saved_training_config
from alignment.sampling import FinishReason, Sample, SamplingParams, TransformersBackend

log = logging.getLogger(__name__)

#: PEFT's name for "no adapter" in mixed-adapter batches: the row runs on the base weights.
BASE = "__base__"


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


# --------------------------------------------------------------------------------------------
# What is compared
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# One base model with every compared adapter attached
# --------------------------------------------------------------------------------------------

def _same_location(a: str, b: str) -> bool:
    """Whether two base-model locations (folders or hub ids) name the same weights."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_adapter_base(adapter: str | Path, base_spec: str) -> Path:
    """The adapter folder, after checking it is a policy LoRA adapter trained on ``base_spec``.

    The base it records (``adapter_config.json``: ``base_model_name_or_path``) must be where
    ``base_spec``'s weights live (:func:`alignment.training.lora.base_model_location`), or the
    model spec of its training run (``training_config.json``) must resolve there; an adapter that
    records no base at all is let through with a warning (PEFT then fails on a shape mismatch).
    """
    from alignment.best_of_n import check_adapter_dir
    from alignment.training.lora import base_model_location

    path = check_adapter_dir(adapter)
    expected = base_model_location(base_spec)
    recorded = read_json(path / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not recorded:
        log.warning("adapter %s does not record its base model; assuming %s", path, base_spec)
        return path
    if _same_location(str(recorded), expected):
        return path
    trained_spec = (saved_training_config(path) or {}).get("model")
    if isinstance(trained_spec, str) and trained_spec.strip():
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            if _same_location(base_model_location(trained_spec), expected):
                return path
    raise ValueError(
        f"adapter {path} was trained on base model {_named(trained_spec, str(recorded))}, not on "
        f"{_named(base_spec, expected)}: models compared side by side share one base model; compare this adapter "
        f"with its own base"
    )


def _named(spec: str | None, location: str) -> str:
    """``'spec' (location)``, or just the location when the spec says no more."""
    return f"{spec!r} ({location})" if spec and spec != location else location


def _adapter_key(path: Path) -> tuple[str, int]:
    """Identity of an adapter's weights: its folder and the weights file's modification time, so a
    folder retrained in place is loaded again."""
    weights = next((path / name for name in ADAPTER_WEIGHTS
                    if (path / name).is_file()), path / ADAPTER_CONFIG)
    return str(path.resolve()), weights.stat().st_mtime_ns


@dataclass
class ComparisonModel:
    """A private copy of one base model, with LoRA adapters attached under names ``adapter_1``, ...

    ``loaded.model`` is the plain transformers model until the first adapter arrives, a PEFT model
    after. Use ``loaded.lock`` around generation: switching adapters is global state.
    """

    loaded: LoadedModel
    base_spec: str
    adapters: dict[str, tuple[tuple[str, int], str]] = field(default_factory=dict)  # folder -> (key, name)
    _counter: int = 0

    def adapter_name(self, adapter: str | Path | None) -> str:
        """The PEFT adapter name of a loaded adapter folder (``BASE`` for None)."""
        if adapter is None:
            return BASE
        return self.adapters[str(Path(adapter).expanduser().resolve())][1]

    def attach(self, adapter: str | Path) -> str:
        """Load ``adapter`` (checked against the base) unless its current weights are attached already."""
        from peft import PeftModel

        path = check_adapter_base(adapter, self.base_spec)
        key = _adapter_key(path)
        known = self.adapters.get(key[0])
        if known and known[0] == key:
            return known[1]
        self._counter += 1
        name = f"adapter_{self._counter}"
        model = self.loaded.model
        try:
            if _is_peft(model):
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
                if known:  # the folder was retrained: drop its old weights
                    model.delete_adapter(known[1])
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ValueError(f"adapter {path} does not fit base model {self.base_spec!r}: {exc}") from exc
        model.eval()
        self.loaded.model = model
        self.adapters[key[0]] = (key, name)
        return name


def load_comparison_model(base_spec: str, adapters: Sequence[str | Path] = (), device: str | None = None) -> ComparisonModel:
    """A fresh private copy of ``base_spec`` with every adapter in ``adapters`` attached."""
    compared = ComparisonModel(load_model(base_spec, device), base_spec)
    for adapter in adapters:
        compared.attach(adapter)
    return compared


_cache: dict[tuple[str, str], ComparisonModel] = {}
_cache_lock = threading.Lock()


def get_comparison_model(base_spec: str, adapters: Sequence[str | Path] = (), device: str | None = None) -> ComparisonModel:
    """The shared comparison copy of ``base_spec`` on ``device``, with ``adapters`` attached.

    One copy per base and device: asking for other adapters later attaches them to the same copy
    (LoRA weights are small), rather than loading the base again. Adapters are checked before
    anything is loaded, so a wrong one leaves the cache as it was.
    """
    device = device or default_device()
    for adapter in adapters:
        check_adapter_base(adapter, base_spec)
    with _cache_lock:
        compared = _cache.get((base_spec, device))
        if compared is None:
            compared = _cache[(base_spec, device)] = load_comparison_model(base_spec, (), device)
    with compared.loaded.lock:
        try:
            for adapter in adapters:
                compared.attach(adapter)
        except ValueError:
            # A load that failed half-way can leave injected LoRA layers behind: start clean next time.
            with _cache_lock:
                _cache.pop((base_spec, device), None)
            raise
    return compared


def clear_comparison_cache() -> None:
    """Forget the cached comparison models (tests; freeing memory)."""
    with _cache_lock:
        _cache.clear()


def shared_base(refs: Sequence[ModelRef]) -> str:
    """The one base model spec of ``refs``, or ValueError naming the ones that differ."""
    from alignment.training.lora import base_model_location

    if not refs:
        raise ValueError("pick at least one model to compare")
    locations = {ref.model: base_model_location(ref.model) for ref in refs}
    first = refs[0].model
    others = [spec for spec, where in locations.items() if not _same_location(where, locations[first])]
    if others:
        raise ValueError(f"models compared side by side share one base model: got {first!r} and {others[0]!r}")
    return first


# --------------------------------------------------------------------------------------------
# Generation: one row per model, the same random numbers in every row
# --------------------------------------------------------------------------------------------

class SharedNoiseSampling:
    """A logits processor that turns greedy search into sampling with the same random numbers in every row.

    Gumbel-max: with ``E ~ Exp(1)`` i.i.d. per vocabulary entry, ``argmax(scores - log E)`` is a
    draw from ``softmax(scores)`` (Gumbel 1954; ``-log E`` is standard Gumbel noise). The numbers
    come from a generator seeded with the comparison's seed, one vector per step shared by every
    row: each row (model) sees at step t the numbers it sees alone with that seed, in a batch of
    any size. (It is the stream of one seeded generator per row, drawn once instead of per row.)
    """

    def __init__(self, seed: int, device: str | torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        noise = torch.empty(scores.shape[-1], device=scores.device, dtype=torch.float32)
        return scores.float() - noise.exponential_(generator=self.generator).log()


@dataclass
class _Generation:
    sample: Sample
    token_ids: list[int]  # sampled tokens, the stop token included when the answer stopped
    seconds: float


def _lora_layers(model: Any, adapter_name: str) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and adapter_name in m.lora_A]


def _scaling_as_tensor_is_exact(scaling: float, dtype: torch.dtype) -> bool:
    """Whether ``t * torch.tensor(scaling, dtype)`` equals ``t * scaling`` for tensors ``t`` of ``dtype``.

    A Python float multiplies in the op's compute type (float32 for float32/16-bit, float64 for
    float64), a tensor factor is first rounded to ``dtype``: the same number unless ``scaling`` is
    not representable in ``dtype`` (for instance 1/3 in bfloat16; powers of two always are).
    """
    compute = torch.promote_types(dtype, torch.float32)
    return torch.tensor(scaling, dtype=dtype).item() == torch.tensor(scaling, dtype=compute).item()


def _row_maskable(model: Any, adapter_names: Sequence[str]) -> bool:
    """Whether every adapter in the batch is plain LoRA on linear layers whose scaling can be made a
    row mask exactly (see :func:`_row_masked_adapters`): prefstudio's adapters. Anything else (DoRA
    and other variants, LoRA on embeddings or convolutions, ``modules_to_save``, merged weights, a
    scaling that 16-bit weights cannot hold) goes through PEFT's own mixed-batch path."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.utils import PeftType

    for name in set(adapter_names) - {BASE}:
        config = model.peft_config.get(name)
        if (config is None or config.peft_type != PeftType.LORA or getattr(config, "modules_to_save", None)
                or getattr(config, "trainable_token_indices", None)):
            return False
        for layer in _lora_layers(model, name):
            scaling = layer.scaling[name]
            if (type(layer) is not LoraLinear or name in layer.lora_variant or layer.merged
                    or not isinstance(scaling, (int, float))
                    or not _scaling_as_tensor_is_exact(scaling, layer.lora_B[name].weight.dtype)):
                return False
    return True


@contextlib.contextmanager
def _row_masked_adapters(model: Any, adapter_names: Sequence[str]) -> Iterator[None]:
    """Row i of the forward passes inside answers with adapter ``adapter_names[i]`` (``BASE``: none).

    Every adapter of the batch is made active at once, so PEFT adds each one's LoRA term
    ``lora_B(lora_A(dropout(x))) * scaling`` to every row; for each adapter the scalar ``scaling``
    is swapped for a tensor of shape ``[rows, 1, 1]`` holding ``scaling`` on the rows that answer
    with it and 0 on the others, which zeroes its term there, LoRA bias included (the LoRA term of
    a finite input is finite). The mask thus rides on a multiply PEFT does anyway: no extra op, module call or hook
    per layer, where PEFT's mixed batch (``adapter_names=``) gathers an adapter's rows, runs LoRA
    on them and scatters the result back in every layer, a handful of small ops per layer and
    decoding step that weigh on the CPU, where decoding is bound by per-op overhead and weight
    reads rather than arithmetic. A row's sum is the one it gets alone: ``y + t`` plus exact zeros
    from the other adapters (:func:`_scaling_as_tensor_is_exact` keeps ``t`` itself the same). An
    adapter used by every row keeps its scalar. Call only when :func:`_row_maskable` holds; the
    active adapters and the scalings are restored afterwards.
    """
    used = list(dict.fromkeys(name for name in adapter_names if name != BASE))
    if not used:
        with model.disable_adapter():
            yield
        return
    previous = model.base_model.active_adapter
    restore: list[tuple[Any, str, float]] = []
    try:
        model.base_model.set_adapter(used, inference_mode=True)
        for name in used:
            if all(row == name for row in adapter_names):
                continue
            masks: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}  # made once per batch, not per step
            for layer in _lora_layers(model, name):
                scaling, weight = layer.scaling[name], layer.lora_B[name].weight
                key = (scaling, weight.dtype, weight.device)
                if key not in masks:
                    masks[key] = torch.tensor([scaling if row == name else 0.0 for row in adapter_names],
                                              dtype=weight.dtype, device=weight.device).view(-1, 1, 1)
                restore.append((layer, name, scaling))
                layer.scaling[name] = masks[key]
        yield
    finally:
        for layer, name, scaling in reversed(restore):
            layer.scaling[name] = scaling
        model.base_model.set_adapter(previous, inference_mode=True)


class SideBySideBackend(TransformersBackend):
    """:class:`TransformersBackend` rows that differ by adapter rather than by prompt (call under the lock)."""

    def generate_batched(self, prompt_ids: list[int], adapter_names: list[str], params: SamplingParams,
                         seed: int) -> list[_Generation]:
        """One ``generate`` call, row i answering with adapter ``adapter_names[i]``.

        Plain LoRA adapters run row-masked (:func:`_row_masked_adapters`); others through PEFT's
        mixed adapter batch (``generate(..., adapter_names=...)``). Both give each row its own
        model's outputs.
        """
        model, rows = self.loaded.model, len(adapter_names)
        if not _is_peft(model):
            if set(adapter_names) != {BASE}:
                raise ValueError(f"no adapters are attached, cannot answer with {sorted(set(adapter_names) - {BASE})}")
            return self._generate(prompt_ids, rows, params, seed)
        if not _row_maskable(model, adapter_names):
            return self._generate(prompt_ids, rows, params, seed, adapter_names=list(adapter_names))
        with _row_masked_adapters(model, adapter_names):
            return self._generate(prompt_ids, rows, params, seed)

    def generate_alone(self, prompt_ids: list[int], adapter_name: str, params: SamplingParams,
                       seed: int) -> _Generation:
        """One row, the model switched to ``adapter_name`` the ordinary PEFT way (the baseline)."""
        with _policy_weights(self.loaded.model, adapter_name):
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
    compared = get_comparison_model(shared_base(refs), [r.adapter for r in refs if r.adapter], device)
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
