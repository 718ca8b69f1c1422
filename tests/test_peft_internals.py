"""The PEFT internals prefstudio relies on, checked against the installed PEFT.

alignment.row_masked_lora swaps a LoRA layer's ``scaling[name]`` for a per-row tensor and reads
``lora_A``, ``lora_B``, ``lora_variant`` and ``merged``; alignment.adapters and
alignment.comparison_model switch adapters with ``set_adapter`` / ``disable_adapter`` /
``load_adapter`` / ``delete_adapter`` and activate several adapters at once through
``base_model.set_adapter([...])``. None of that is PEFT's public API, so a PEFT upgrade may rename
or reshape it silently. These tests fail loudly, naming what changed, on a tiny two-layer model
with two LoRA adapters (no download, milliseconds).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import peft
from alignment.adapters import BASE, lora_layers, policy_weights
from alignment.row_masked_lora import row_maskable, row_masked_adapters

WHO = f"peft {peft.__version__}"


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 8)
        self.down = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


@pytest.fixture
def model():
    """Two LoRA adapters with different ranks and scalings, B initialised at random (so each one
    changes the output)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = dict(target_modules=["up", "down"], init_lora_weights=False)
    model = get_peft_model(TwoLayers(), LoraConfig(r=2, lora_alpha=4, **config), adapter_name="one")
    model.add_adapter("two", LoraConfig(r=4, lora_alpha=2, **config))
    return model.eval()


def test_the_classes_and_names_it_imports_exist():
    from peft.tuners import lora
    from peft.utils import PeftType

    assert hasattr(lora, "LoraLayer") and hasattr(lora, "Linear"), f"{WHO}: peft.tuners.lora.LoraLayer/Linear moved"
    assert issubclass(lora.Linear, lora.LoraLayer), f"{WHO}: lora.Linear is no longer a LoraLayer"
    assert PeftType.LORA, f"{WHO}: PeftType.LORA is gone"


def test_a_lora_linear_layer_still_has_the_attributes_row_masking_touches(model):
    from peft.tuners.lora import Linear as LoraLinear

    layers = lora_layers(model, "one")
    assert len(layers) == 2, f"{WHO}: LoRA layers are no longer found as LoraLayer modules holding lora_A[name]"
    for layer in layers:
        assert type(layer) is LoraLinear, f"{WHO}: a LoRA'd nn.Linear is now {type(layer).__name__}"
        for name in ("one", "two"):
            assert isinstance(layer.scaling, dict) and isinstance(layer.scaling[name], float), \
                f"{WHO}: layer.scaling[{name!r}] is no longer a float in a dict: {layer.scaling!r}"
            assert isinstance(layer.lora_A, nn.ModuleDict) and name in layer.lora_A, f"{WHO}: lora_A changed"
            assert isinstance(layer.lora_B[name].weight, torch.Tensor), f"{WHO}: lora_B[name].weight changed"
            assert name not in layer.lora_variant, f"{WHO}: plain LoRA now has a lora_variant entry"
        assert layer.merged is False, f"{WHO}: layer.merged is no longer a bool"
    config = model.peft_config["one"]
    for attribute in ("peft_type", "modules_to_save", "trainable_token_indices"):
        assert hasattr(config, attribute), f"{WHO}: LoraConfig.{attribute} is gone"
    assert row_maskable(model, [BASE, "one", "two"]), f"{WHO}: prefstudio's plain LoRA is no longer row-maskable"


def test_the_model_still_switches_and_stacks_adapters_the_way_it_is_called(model):
    for method in ("set_adapter", "disable_adapter", "load_adapter", "delete_adapter"):
        assert callable(getattr(model, method, None)), f"{WHO}: PeftModel.{method} is gone"
    model.set_adapter("two", inference_mode=True)
    assert model.active_adapter == "two", f"{WHO}: set_adapter(name, inference_mode=True) changed"
    model.base_model.set_adapter(["one", "two"], inference_mode=True)
    assert list(model.base_model.active_adapter) == ["one", "two"], \
        f"{WHO}: base_model.set_adapter([...]) no longer activates several adapters"


def test_the_lora_term_is_still_multiplied_by_scaling_name(model):
    """The mechanism itself: a scaling of 0 gives the base output, and a per-row scaling tensor gives
    each row the output of its own adapter (as row_masked_adapters relies on)."""
    x = torch.randn(3, 5, 6)
    with torch.no_grad():
        with model.disable_adapter():
            base = model(x)
        alone = {}
        for name in ("one", "two"):
            with policy_weights(model, name):
                alone[name] = model(x)
        layer = lora_layers(model, "one")[0]
        saved = layer.scaling["one"]
        try:
            model.set_adapter("one", inference_mode=True)
            for other in lora_layers(model, "one"):
                other.scaling["one"] = 0.0
            assert torch.allclose(model(x), base), f"{WHO}: the LoRA term is no longer scaled by scaling[name]"
        finally:
            for other in lora_layers(model, "one"):
                other.scaling["one"] = saved
        rows = ["one", BASE, "two"]
        with row_masked_adapters(model, rows):
            mixed = model(x)
    expected = torch.stack([alone["one"][0], base[1], alone["two"][2]])
    assert torch.allclose(mixed, expected, atol=1e-6), f"{WHO}: a per-row scaling tensor no longer masks rows"
    assert all(isinstance(layer.scaling[name], float) for layer in lora_layers(model, "one") for name in ("one", "two"))
