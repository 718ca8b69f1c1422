"""Models for training: the base weights, their LoRA wrapping, and the optional 4-bit (QLoRA) path.

This module owns

* finding the base weights of a model spec (same resolution as :mod:`alignment.models`:
  ``default`` and ``.gguf`` load from their converted cache folder);
* loading a fresh, trainable copy: a causal LM for DPO / PL-DPO, or a sequence classifier with one
  output (``num_labels=1``) on the same weights for the reward model, float32 on the CPU and
  bfloat16 on CUDA;
* wrapping it with PEFT LoRA (the reward model's ``score`` head is fully trained and saved with
  the adapter through ``modules_to_save``), its dropout fused into ``lora_A`` to keep less for the
  backward pass (:mod:`alignment.training.lean_dropout`);
* QLoRA: 4-bit NF4 weights through bitsandbytes plus ``prepare_model_for_kbit_training``. Training
  runs refuse it without CUDA (see :func:`require_cuda_for_4bit`); the building blocks themselves
  also run on the CPU, which the tests use to exercise the real path.

The shared, generation-ready instances of :func:`alignment.models.get_model` are never touched:
training needs its own copy (different padding side, trainable adapters).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from alignment.models import converted_gguf_dir, resolve_model_spec
from alignment.training.lean_dropout import use_lean_lora_dropout

#: Where the reward model keeps its scalar head (LlamaForSequenceClassification and most others).
REWARD_HEAD = "score"


@dataclass
class TrainableModel:
    """A LoRA-wrapped model with its tokenizer and where its base weights came from."""

    model: Any  # peft.PeftModel
    tokenizer: Any
    base_location: str  # HF folder or hub id the base weights were loaded from
    device: str

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# Where the weights are
# --------------------------------------------------------------------------------------------

def base_model_location(spec: str) -> str:
    """The HF folder (or hub id) holding ``spec``'s weights; converts a GGUF file once if needed."""
    source = resolve_model_spec(spec)
    if source.kind in ("default", "gguf"):
        return str(converted_gguf_dir(source.path))
    return source.location


def training_dtype(device: str) -> torch.dtype:
    """float32 on the CPU (fast kernels, exact), bfloat16 on CUDA."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_tokenizer(location: str) -> Any:
    """The tokenizer for training: right padding (as the batches are built), a pad token set."""
    from transformers import AutoTokenizer

    tokenizer = _hub_errors(AutoTokenizer.from_pretrained, location)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _hub_errors(load, location: str, **kwargs: Any) -> Any:
    try:
        return load(location, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        raise RuntimeError(
            f"could not load {location!r}: not a local model folder, not in the Hugging Face cache"
            f"{' and the hub is offline (HF_HUB_OFFLINE is set)' if offline else ''}. Details: {exc}"
        ) from exc


# --------------------------------------------------------------------------------------------
# QLoRA building blocks
# --------------------------------------------------------------------------------------------

def require_cuda_for_4bit(device: str) -> None:
    """Refuse QLoRA training off CUDA, before anything is loaded."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU; this machine would train on the CPU. "
                         "Set load_in_4bit=False to train LoRA in float32 on the CPU.")


def quantization_config() -> Any:
    """4-bit NF4 weights with bfloat16 compute (the QLoRA recipe, Dettmers et al. 2023)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


def prepare_for_kbit(model: Any, gradient_checkpointing: bool = True) -> Any:
    """PEFT's preparation of a quantized model: norms in fp32, frozen base, input grads, checkpointing."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_base_model(location: str, *, device: str, reward: bool = False, quantization: Any = None,
                    pad_token_id: int | None = None) -> Any:
    """A fresh copy of the base weights: a causal LM, or a 1-output sequence classifier (``reward``).

    With ``quantization`` (see :func:`quantization_config`) the linear layers load as bitsandbytes
    4-bit modules directly onto ``device``.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"dtype": training_dtype(device)}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()} if device.startswith("cuda") else device
    if reward:
        kwargs["num_labels"] = 1
        if pad_token_id is not None:
            kwargs["pad_token_id"] = pad_token_id
        model = _hub_errors(AutoModelForSequenceClassification.from_pretrained, location, **kwargs)
        # The head pools each sequence at its last non-pad token: it must know the pad id.
        model.config.pad_token_id = pad_token_id
    else:
        model = _hub_errors(AutoModelForCausalLM.from_pretrained, location, **kwargs)
    if quantization is None:
        model.to(device)
    model.config.use_cache = False
    return model


def lora_config(config: Any, reward: bool = False) -> Any:
    """PEFT LoraConfig from a training config (r, alpha, dropout, target modules)."""
    from peft import LoraConfig, TaskType

    target = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=target, bias="none",
        task_type=TaskType.SEQ_CLS if reward else TaskType.CAUSAL_LM,
        modules_to_save=[REWARD_HEAD] if reward else None,
    )


def wrap_with_lora(model: Any, config: Any, reward: bool = False) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config, reward=reward))


def load_trainable(config: Any, reward: bool = False, init_adapter: str | None = None) -> TrainableModel:
    """Base model (+ 4-bit quantization when asked) wrapped with LoRA, ready to train.

    The seed is set first so the LoRA initialisation (and the reward head) are reproducible.
    With ``init_adapter`` (a PEFT adapter folder) training continues from that adapter, with its
    own LoRA settings, instead of a fresh one.
    """
    device = config.resolved_device()
    if config.load_in_4bit:
        require_cuda_for_4bit(device)  # before loading anything
    location = base_model_location(config.model)
    tokenizer = load_tokenizer(location)
    torch.manual_seed(config.seed)
    quantization = quantization_config() if config.load_in_4bit else None
    model = load_base_model(location, device=device, reward=reward, quantization=quantization,
                            pad_token_id=tokenizer.pad_token_id)
    if quantization is not None:
        model = prepare_for_kbit(model)  # turns on gradient checkpointing itself
    elif config.gradient_checkpointing:
        # Keep only each layer's input and recompute the rest in the backward pass: activations of
        # 30 layers x batch x length would otherwise dominate memory. Non-reentrant checkpointing
        # works with frozen inputs (LoRA) and replays dropout with the same RNG state.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        model = wrap_with_lora(model, config, reward=reward)
    use_lean_lora_dropout(model)  # same dropout, a 1-byte mask kept for backward instead of two float copies
    return TrainableModel(model=model, tokenizer=tokenizer, base_location=location, device=device)


def load_policy(config: Any, init_adapter: str | None = None) -> TrainableModel:
    """The causal LM to train with DPO / PL-DPO / PPO / GRPO (its disabled adapter is the reference model)."""
    return load_trainable(config, reward=False, init_adapter=init_adapter)


def load_reward_backbone(config: Any) -> TrainableModel:
    """The sequence classifier (one score) to train as a reward model."""
    return load_trainable(config, reward=True)


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """Detached copies of every trainable tensor (LoRA weights, saved heads), e.g. to compare runs."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
