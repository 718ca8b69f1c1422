"""Best-of-N sampling: draw N responses per prompt from a policy and keep the one a reward model scores highest.

This module owns

* the result types (:class:`Candidate`, :class:`BestOfN`);
* :func:`best_of_n`: sample with any :class:`~alignment.sampling.GenerationBackend`, score every
  candidate with a reward model from :func:`alignment.training.reward.load_reward_model`, pick the
  argmax (the first one on a tie);
* :func:`policy_backend`: a :class:`~alignment.sampling.TransformersBackend` on a base model,
  optionally with a LoRA adapter (e.g. from ``app.py train dpo``) merged into its own copy of the
  weights;
* :class:`BestOfNConfig`: the settings of a best-of-N run over a prompt file, one dataclass with a
  help text per field and validation in ``__post_init__`` (as the training configs), so a job's
  form, its saved config and the worker agree.

It is pure computation: no database, no files other than the model folders it loads.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from alignment.chat import Messages, validate_messages
from alignment.models import DEFAULT_MODEL, LoadedModel, load_model
from alignment.run_folder import ADAPTER_CONFIG, read_json, recorded_base_model, saved_training_config
from alignment.sampling import GenerationBackend, SamplingParams, TransformersBackend, backend_for
from alignment.settings import RunSettings, check_int, help_field

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

def check_adapter_dir(adapter: str | Path) -> Path:
    """The adapter folder as a Path, or ValueError saying why it is not a policy (causal LM) adapter."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ValueError(f"adapter folder not found: {path}")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ValueError(f"{path} is not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    task = read_json(config_file).get("task_type")
    if task == "SEQ_CLS":
        raise ValueError(f"{path} is a reward model (a sequence-classification adapter), not a policy adapter: "
                         f"pass it as the reward model instead")
    return path


def adapter_base_model(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on, when its folder says so and that model is at hand.

    Prefers the spec in the run's ``training_config.json`` (as the user gave it, e.g. ``default``),
    then ``base_model_name_or_path`` from ``adapter_config.json`` when it is an existing folder.
    """
    path = Path(adapter).expanduser()
    spec = (saved_training_config(path) or {}).get("model")
    if isinstance(spec, str) and spec.strip():
        return spec
    recorded = recorded_base_model(path)
    return recorded if recorded and Path(recorded).is_dir() else None


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


# --------------------------------------------------------------------------------------------
# The settings of a run (a best-of-N job's config)
# --------------------------------------------------------------------------------------------

BEST_OF_N_FILE = "best_of_n.jsonl"



def check_reward_dir(reward: str | Path) -> Path:
    """The reward model folder as a Path, or ValueError saying why it is not one."""
    if not isinstance(reward, (str, Path)) or not str(reward).strip():
        raise ValueError("reward: pick a reward model (train one first: a reward-model job or `app.py train rm`)")
    path = Path(reward).expanduser()
    if not path.is_dir():
        raise ValueError(f"reward model folder not found: {path}")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ValueError(f"{path} is not a saved reward model (no {ADAPTER_CONFIG})")
    if read_json(config_file).get("task_type") not in (None, "SEQ_CLS"):
        raise ValueError(f"{path} is a policy adapter, not a reward model: pick it as the adapter instead")
    return path



@dataclass(kw_only=True)
class BestOfNConfig(RunSettings):
    """Best-of-N over a prompt file: N samples per prompt from the policy, scored by a reward model."""

    method: ClassVar[str] = "best_of_n"

    data: str = field(metadata={"help": "Prompt file (JSONL: one {'prompt'} or {'messages'} row per prompt)."})
    out: str = field(metadata={"help": f"Output folder: the dataset ({BEST_OF_N_FILE}) and every candidate "
                                       f"with its provenance."})
    reward: str = help_field("", "Reward model folder (the output of a reward-model job) that scores every candidate.")
    model: str | None = help_field(None, "Policy model spec: 'default', a .gguf file, a local HF folder or a hub id "
                                         "(empty: the adapter's base model, else 'default').")
    adapter: str | None = help_field(None, "LoRA adapter folder for the policy, e.g. a DPO job's output (empty: the "
                                           "base model alone).")
    n: int = help_field(4, "Candidates sampled per prompt; the reward model keeps the best.")
    temperature: float = help_field(0.8, "Sampling temperature (0 = greedy, which makes the N candidates identical).")
    top_p: float = help_field(0.95, "Nucleus sampling threshold, in (0, 1].")
    max_new_tokens: int = help_field(256, "Longest candidate, in tokens.")
    seed: int | None = help_field(0, "Seed for sampling: the same prompts and settings give the same candidates "
                                     "(empty: unseeded).")
    batch_size: int = help_field(8, "Candidates scored per reward-model batch.")
    device: str = help_field("auto", "Where to run: 'auto' (CUDA when available), 'cpu' or 'cuda'.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and what would be accepted."""
        self.check_files()
        check_reward_dir(self.reward)
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ValueError("model must be a non-empty spec ('default', a .gguf file, a folder or a hub id) "
                             "or empty for the adapter's base model")
        if self.adapter is not None:
            check_adapter_dir(self.adapter)
        check_int("n", self.n, minimum=1)
        self.sampling_params()  # temperature, top_p, max_new_tokens and seed, checked where they are used
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        self.check_device()

    def policy_spec(self) -> str:
        """The policy model as run: the given spec, else the adapter's base model, else the default."""
        return self.model or (adapter_base_model(self.adapter) if self.adapter else None) or DEFAULT_MODEL

    @property
    def dataset_path(self) -> Path:
        return Path(self.out) / BEST_OF_N_FILE


