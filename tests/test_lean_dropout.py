"""LoRA dropout fused into lora_A (alignment.training.lean_dropout): the same values and gradients as
dropout followed by the linear layer with the same mask, less memory kept for the backward pass."""
from __future__ import annotations

import torch
from torch import nn
from torch.testing import assert_close

from alignment.training.lean_dropout import DropoutLoraA, LeanDropoutLinear, use_lean_lora_dropout


def test_fused_dropout_linear_equals_dropout_then_linear_with_the_same_mask():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    weight = torch.randn(3, 8, requires_grad=True)
    mask = torch.rand(2, 5, 8) > 0.3
    scale = 1 / 0.7
    grad = torch.randn(2, 5, 3)

    fused = DropoutLoraA.apply(x, weight, mask, scale)
    (fused * grad).sum().backward()
    got = (fused.detach(), x.grad.clone(), weight.grad.clone())
    x.grad, weight.grad = None, None
    reference = nn.functional.linear(x * mask.float() * scale, weight)  # what nn.Dropout + nn.Linear compute
    (reference * grad).sum().backward()
    for a, b in zip(got, (reference.detach(), x.grad, weight.grad)):
        assert_close(a, b)


def tiny_lora(tiny_model_dir, dropout):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
                                            init_lora_weights=False))


def saved_bytes(model, input_ids) -> int:
    """Bytes of the distinct activation storages (weights left out) autograd keeps for one forward's backward."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=input_ids).logits.sum()
    return sum(storages.values())


def test_installed_on_a_peft_model_it_keeps_less_and_changes_no_names(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    input_ids = torch.randint(0, 100, (2, 48))
    standard = tiny_lora(tiny_model_dir, 0.1).train()
    lean = tiny_lora(tiny_model_dir, 0.1).train()
    names = [n for n, _ in lean.named_parameters()]
    changed = use_lean_lora_dropout(lean)
    assert changed == sum(isinstance(m, LeanDropoutLinear) for m in lean.modules()) > 0
    assert [n for n, _ in lean.named_parameters()] == names  # optimizer and saved adapters see the same
    assert saved_bytes(lean, input_ids) < 0.8 * saved_bytes(standard, input_ids)

    # eval mode: no dropout, the same outputs as PEFT's own modules
    with torch.no_grad():
        assert_close(lean.eval()(input_ids=input_ids).logits, standard.eval()(input_ids=input_ids).logits)
    # training mode: dropout is applied (outputs differ from eval), and gradients reach lora_A
    lean.train()
    out = lean(input_ids=input_ids).logits
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lean.named_parameters() if "lora_A" in n)

    lean.save_pretrained(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert_close(reloaded(input_ids=input_ids).logits, lean.eval()(input_ids=input_ids).logits)


def test_no_dropout_means_nothing_to_change(tiny_model_dir):
    assert use_lean_lora_dropout(tiny_lora(tiny_model_dir, 0.0)) == 0
