"""LoRA dropout that keeps a 1-byte mask for the backward pass instead of two float copies.

PEFT computes a LoRA branch as ``lora_B(lora_A(dropout(x))) * scaling``. With ``lora_dropout > 0``
autograd then keeps, for every adapted linear layer, the float dropout noise (kept by the
multiplication) and the dropped input (kept by ``lora_A`` for its weight gradient): two tensors
the size of the layer's input, on top of ``x`` itself. With LoRA on all seven linear layers of a
Llama block that is about 35 KB per token per layer in float32, close to half of all the
activations a training step keeps (measured on SmolLM2-135M: 78 KB per token per layer).

:class:`DropoutLoraA` fuses the dropout into ``lora_A``: its forward computes
``(x ⊙ m / (1 − p)) Aᵀ`` and keeps only ``x`` (the same tensor object for the q/k/v branches,
which read the same input, so it is kept once) and the Boolean mask ``m``; the backward recomputes
the dropped input from them. The result and the gradients are those of dropout followed by a
linear layer with the same mask: the same computation, in less memory. The mask is drawn from
torch's global generator like ``nn.Dropout`` (but not with the same draws, so a run is
reproducible with itself, not bit-identical to PEFT's own dropout).

:func:`use_lean_lora_dropout` installs it on a PEFT model: each adapter's dropout module becomes
``nn.Identity`` and its ``lora_A`` layer becomes a :class:`LeanDropoutLinear` (the same module
object and weight, its class changed), so parameter names, the optimizer and saved adapters are
unchanged. In eval mode the layer is a plain linear layer.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DropoutLoraA", "LeanDropoutLinear", "use_lean_lora_dropout"]


class DropoutLoraA(torch.autograd.Function):
    """``y = (x ⊙ mask) Wᵀ · scale`` keeping ``x`` and the Boolean ``mask`` (not the dropped input)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(x, weight, mask)
        ctx.scale = scale
        return torch.nn.functional.linear(x * mask * scale, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight, mask = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight) * mask * ctx.scale
        if ctx.needs_input_grad[1]:
            dropped = (x * mask * ctx.scale).reshape(-1, x.shape[-1])
            grad_w = grad.reshape(-1, grad.shape[-1]).t() @ dropped
        return grad_x, grad_w, None, None


class LeanDropoutLinear(nn.Linear):
    """``lora_A`` with its dropout fused in (training mode only); ``p`` is the dropout probability."""

    p: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return super().forward(x)
        mask = torch.empty(x.shape, dtype=torch.bool, device=x.device).bernoulli_(1.0 - self.p)
        return DropoutLoraA.apply(x, self.weight, mask, 1.0 / (1.0 - self.p))


def use_lean_lora_dropout(model: nn.Module) -> int:
    """Fuse every LoRA dropout of ``model`` into its ``lora_A`` (see the module docstring).

    Returns how many adapted layers were changed (those whose dropout probability is above 0 and
    whose ``lora_A`` is a plain ``nn.Linear``; others, e.g. embeddings or variants like DoRA, keep
    PEFT's own dropout).
    """
    changed = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(dropouts, nn.ModuleDict) or not isinstance(lora_a, nn.ModuleDict):
            continue
        variants = getattr(module, "lora_variant", {}) or {}
        for name, dropout in list(dropouts.items()):
            linear = lora_a[name] if name in lora_a else None
            if not isinstance(dropout, nn.Dropout) or dropout.p == 0 or name in variants \
                    or type(linear) is not nn.Linear:
                continue
            linear.__class__ = LeanDropoutLinear
            linear.p = float(dropout.p)
            dropouts[name] = nn.Identity()
            changed += 1
    return changed
