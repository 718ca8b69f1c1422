"""Row-masked LoRA: one forward pass in which each row of the batch answers with its own adapter.

Plain LoRA adapters on linear layers, as prefstudio trains them, run row-masked
(:func:`row_masked_adapters`): every adapter of the batch is active and each one's LoRA scaling
becomes a per-row tensor, ``scaling`` on its rows and 0 elsewhere, so a batch costs the base's
forward pass plus each adapter's LoRA ops once. Other adapters go through PEFT's mixed adapter
batches (``generate(..., adapter_names=["__base__", "adapter_1", ...])``), which gather and
scatter each adapter's rows in every LoRA layer, slower on the CPU; there (peft 0.21) the model
must be in eval mode, no adapter may be merged into the weights, and DoRA adapters are refused.

This module reaches into PEFT's LoRA layers (``scaling``, ``lora_A``, ``lora_B``, ``lora_variant``,
``merged``; ``base_model.set_adapter`` with several names): tests/test_peft_internals.py checks
that the installed PEFT still has them and still multiplies by ``scaling[name]``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from alignment.adapters import BASE, lora_layers


def scaling_as_tensor_is_exact(scaling: float, dtype: torch.dtype) -> bool:
    """Whether ``t * torch.tensor(scaling, dtype)`` equals ``t * scaling`` for tensors ``t`` of ``dtype``.

    A Python float multiplies in the op's compute type (float32 for float32/16-bit, float64 for
    float64), a tensor factor is first rounded to ``dtype``: the same number unless ``scaling`` is
    not representable in ``dtype`` (for instance 1/3 in bfloat16; powers of two always are).
    """
    compute = torch.promote_types(dtype, torch.float32)
    return torch.tensor(scaling, dtype=dtype).item() == torch.tensor(scaling, dtype=compute).item()


def row_maskable(model: Any, adapter_names: Sequence[str]) -> bool:
    """Whether every adapter in the batch is plain LoRA on linear layers whose scaling can be made a
    row mask exactly (see :func:`row_masked_adapters`): prefstudio's adapters. Anything else (DoRA
    and other variants, LoRA on embeddings or convolutions, ``modules_to_save``, merged weights, a
    scaling that 16-bit weights cannot hold) goes through PEFT's own mixed-batch path."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.utils import PeftType

    for name in set(adapter_names) - {BASE}:
        config = model.peft_config.get(name)
        if (config is None or config.peft_type != PeftType.LORA or getattr(config, "modules_to_save", None)
                or getattr(config, "trainable_token_indices", None)):
            return False
        for layer in lora_layers(model, name):
            scaling = layer.scaling[name]
            if (type(layer) is not LoraLinear or name in layer.lora_variant or layer.merged
                    or not isinstance(scaling, (int, float))
                    or not scaling_as_tensor_is_exact(scaling, layer.lora_B[name].weight.dtype)):
                return False
    return True


@contextlib.contextmanager
def row_masked_adapters(model: Any, adapter_names: Sequence[str]) -> Iterator[None]:
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
    from the other adapters (:func:`scaling_as_tensor_is_exact` keeps ``t`` itself the same). An
    adapter used by every row keeps its scalar. Call only when :func:`row_maskable` holds; the
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
            for layer in lora_layers(model, name):
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

