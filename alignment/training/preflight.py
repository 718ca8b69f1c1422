"""Checks that run before a training run loads its model: seconds, not the minute a model load takes.

A run that is going to fail on its input should say so at once, naming the input: the base model is
a file that is no model, the data file is not JSONL preference data, the checkpoint to resume from is
an ordinary folder, a LoRA target module does not exist in the model. Each check raises ValueError
with the message a person reads; nothing here loads weights (the model is built on the meta device).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alignment.models import resolve_model_spec


def check_training_inputs(config: Any) -> None:
    """Everything about ``config``'s inputs that can be checked without loading the model."""
    check_model_spec(config.model)
    check_data(config)
    check_model_inputs(config)


def check_model_inputs(config: Any) -> None:
    """The checkpoint to resume from, and the settings that depend on the model's architecture."""
    check_model_spec(config.model)
    if config.resume_from:
        check_checkpoint(config.resume_from)
    model_config = architecture_config(config.model)
    context = getattr(model_config, "max_position_embeddings", None)
    if context and config.max_length > context:
        raise ValueError(f"max_length {config.max_length:,} is longer than {config.model}'s context of "
                         f"{context:,} tokens")
    if config.target_modules != "all-linear":
        check_target_modules(model_config, config.model, config.target_modules)


def check_model_spec(spec: str) -> None:
    """A local model must be a .gguf file or a folder with a config.json (hub ids are checked on load)."""
    source = resolve_model_spec(spec)
    if source.kind == "local" and not (Path(source.location) / "config.json").is_file():
        raise ValueError(f"model folder {source.location} holds no model (no config.json): give 'default', "
                         "a model folder, a .gguf file or a hub id")
    if source.kind == "gguf":
        with open(source.location, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ValueError(f"{source.location} is not a GGUF model file (it does not start with 'GGUF')")


def check_data(config: Any) -> None:
    """The data file parses as the method's rows (pairs, rankings for PL-DPO, prompts for PPO and
    GRPO, whose reward functions must import too), with its line numbers."""
    from alignment.rl.rollouts import load_prompts
    from alignment.training.data import load_pairs, load_rankings

    path = Path(config.data).expanduser()
    if not path.is_file():  # also refuses a FIFO or a device, which would block or never end
        raise ValueError(f"data file {path} is not a regular file")
    check_rewards(config)
    loaders = {"pl_dpo": load_rankings, "grpo": load_prompts, "ppo": load_prompts}
    try:
        loaders.get(config.method, load_pairs)(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}): expected a JSONL "
                         "file of preference rows") from None
    except RecursionError:
        raise ValueError(f"{path}: a row is nested too deeply to be preference data") from None


def check_rewards(config: Any) -> None:
    """An online RL run's reward functions import and name a callable, its built-in rules parse
    (RewardError, a ValueError, naming the one that does not); nothing to check for other methods."""
    from alignment.rl.rewards import builtin_reward, load_reward_fn

    for spec in getattr(config, "reward_fn", ()):
        load_reward_fn(spec)
    for spec in getattr(config, "reward_rule", ()):
        builtin_reward(spec)


def check_checkpoint(path: str) -> None:
    from alignment.training.loop import load_checkpoint_state

    try:
        load_checkpoint_state(Path(path).expanduser())
    except ValueError as exc:
        raise ValueError(f"cannot resume: {exc}; give a checkpoint-N folder from an earlier run's output "
                         "folder") from None


def check_target_modules(model_config: Any, model_spec: str, targets) -> None:
    """Every LoRA target names a module of the model (as PEFT matches: the full name or its last parts)."""
    names = module_names(model_config)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, kind in names.items() if kind == "Linear"})
        raise ValueError(f"LoRA target module(s) {', '.join(missing)} not found in {model_spec}; its linear "
                         f"layers are: {', '.join(linear)} (or use 'all-linear')")


def architecture_config(model_spec: str) -> Any:
    """The model's transformers config (its config.json; a GGUF file is converted once, as training would)."""
    from transformers import AutoConfig

    from alignment.training.lora import base_model_location

    return AutoConfig.from_pretrained(base_model_location(model_spec))


def module_names(model_config: Any) -> dict[str, str]:
    """Module name -> class name of the model's causal-LM architecture, built without its weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return {name: type(module).__name__ for name, module in model.named_modules() if name}
