"""Which weights a PEFT model answers with: one of its LoRA adapters, or its base.

* :data:`BASE`: PEFT's name for "no adapter" (in mixed-adapter batches the row runs on the base);
* :func:`policy_weights`: a context in which the model answers with one adapter (or the base);
* :func:`base_weights`: a context in which it answers with its base weights;
* :func:`lora_layers`: the LoRA layers that hold one adapter.

A plain transformers model (no adapters) is its own base: both contexts leave it as it is.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: PEFT's name for "no adapter" in mixed-adapter batches: the row runs on the base weights.
BASE = "__base__"


def is_peft(model: Any) -> bool:
    """Whether ``model`` is a PEFT model (it has adapters to switch)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def policy_weights(model: Any, adapter_name: str | None) -> Iterator[None]:
    """The model as the policy: ``adapter_name`` active (None: as it is, ``BASE``: adapters off)."""
    if adapter_name == BASE and is_peft(model):
        with model.disable_adapter():
            yield
        return
    if adapter_name in (None, BASE) or not is_peft(model):
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


def base_weights(model: Any) -> contextlib.AbstractContextManager:
    """The model with its adapters disabled (a plain model as it is)."""
    return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()


def lora_layers(model: Any, adapter_name: str) -> list[Any]:
    """The model's LoRA layers that hold ``adapter_name``."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and adapter_name in m.lora_A]

