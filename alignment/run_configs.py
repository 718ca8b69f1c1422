"""The settings of the sampling runs (best-of-N, evaluation) and the checks of the model folders they
name: light enough (no torch, no transformers) for the command line to build its flags, defaults and
help from these dataclasses, as it does from the training configs.

This module owns

* :class:`BestOfNConfig`: a best-of-N run over a prompt file;
* :class:`EvalConfig`: a tuned adapter against its base model on held-out prompts;
* :func:`check_adapter_dir`, :func:`check_reward_dir`: a folder is a policy adapter / a reward model,
  or a ValueError saying why not; :func:`adapter_base_model`: the base model an adapter names.

:mod:`alignment.best_of_n` and :mod:`alignment.evaluation` run them (and re-export these names).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from alignment.embedded import DEFAULT_MODEL
from alignment.run_folder import ADAPTER_CONFIG, read_json, recorded_base_model, saved_training_config
from alignment.settings import RunSettings, check_int, help_field

BEST_OF_N_FILE = "best_of_n.jsonl"
RESULTS_FILE = "evaluation.jsonl"
#: The most prompts an evaluation answers unless told otherwise (each takes a few seconds on a CPU).
EVAL_MAX_PROMPTS = 32


# --------------------------------------------------------------------------------------------
# Model folders
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


@dataclass(kw_only=True)
class EvalConfig(RunSettings):
    """A tuned adapter against its base model on held-out prompts, judged by a reward model."""

    method: ClassVar[str] = "evaluation"

    data: str = field(metadata={"help": "Prompt file (JSONL: one {'prompt'} or {'messages'} row per prompt)."})
    out: str = field(metadata={"help": f"Output folder: per-prompt results ({RESULTS_FILE}) and metrics."})
    adapter: str = help_field("", "The tuned model: a LoRA adapter folder (a DPO or listwise DPO job's output).")
    reward: str = help_field("", "Reward model folder (a reward-model job's output) that scores both answers.")
    model: str | None = help_field(None, "Base model spec (empty: the adapter's own base model).")
    pairs: str | None = help_field(None, "Held-out human preference pairs (TRL JSONL) to measure the reward model's "
                                         "agreement with people (empty: skip that metric).")
    temperature: float = help_field(0.7, "Sampling temperature for both models (0 = greedy).")
    top_p: float = help_field(0.95, "Nucleus sampling threshold, in (0, 1].")
    max_new_tokens: int = help_field(128, "Longest answer, in tokens.")
    seed: int = help_field(0, "Sampling seed: both models draw with the same seed for each prompt.")
    batch_size: int = help_field(8, "Human pairs per reward-model batch when measuring its agreement with people.")
    device: str = help_field("auto", "Where to run: 'auto' (CUDA when available), 'cpu' or 'cuda'.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.check_files()
        if not self.adapter:
            raise ValueError("adapter: pick the tuned model to evaluate (a DPO job's output)")
        check_adapter_dir(self.adapter)  # also refuses a reward model given as the adapter
        check_reward_dir(self.reward)
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ValueError("model must be a non-empty spec or empty for the adapter's base model")
        if self.pairs is not None and not Path(self.pairs).expanduser().is_file():
            raise ValueError(f"pairs file not found: {self.pairs!r}")
        self.sampling_params()
        check_int("seed", self.seed, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        self.check_device()

    def base_spec(self) -> str:
        return self.model or adapter_base_model(self.adapter) or DEFAULT_MODEL

    @property
    def results_path(self) -> Path:
        return Path(self.out) / RESULTS_FILE
