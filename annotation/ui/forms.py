"""Forms generated from config dataclasses: one component per field, labelled with its help text.

The same dataclass feeds the CLI, the UI form and the stored config, and its own validation runs
before anything is saved or launched, so the form cannot drift from what the code accepts. A new
config class (a new method) gets its form with no code here: its fields show under "Advanced" unless
named in ``basic`` or marked ``metadata={"basic": True}``, and a field with
``metadata={"choices": [...]}`` is a dropdown. Messages about the values name the form's labels,
not the code's field names.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any

import gradio as gr

# Labels where the field name is an abbreviation or jargon; other fields read as their name.
LABELS = {
    "lr": "Learning rate", "lr_schedule": "Learning-rate schedule", "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout", "target_modules": "LoRA target modules",
    "grad_accum": "Gradient accumulation (batches per step)", "max_grad_norm": "Gradient clipping (max norm)",
    "max_length": "Max tokens per example", "micro_batch_size": "Examples per forward pass",
    "eval_fraction": "Held-out share", "load_in_4bit": "4-bit QLoRA (CUDA only)", "max_steps": "Max steps",
    "n": "Candidates per prompt (N)", "top_p": "Top-p", "beta": "Beta (distance from the reference)",
    "reward": "Reward model", "adapter": "Adapter (tuned policy)", "model": "Base model",
    "use_margin": "Use the rating margin", "reward_model": "Reward model",
    "init_adapter": "Starting adapter (also the reference)", "reward_rule": "Built-in reward rules",
    "reward_fn": "Reward functions (FILE.py:NAME)",
}


def field_label(name: str, cls: type | None = None) -> str:
    """The form's label of field ``name`` (of config class ``cls``: a field may carry its own)."""
    own = next((f.metadata.get("label") for f in dataclasses.fields(cls) if f.name == name), None) if cls else None
    return own or LABELS.get(name) or name.replace("_", " ").capitalize()



def _base_type(hint):
    """`int | None` -> (int, True); `int` -> (int, False); anything else -> (hint, False)."""
    args = typing.get_args(hint)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def build_form(cls: type, choices: dict[str, list] | None = None, multiline: tuple[str, ...] = (),
               prefix: str = "", defaults: dict[str, Any] | None = None,
               exclude: tuple[str, ...] = (),
               custom_values: tuple[str, ...] = (),
               basic: tuple[str, ...] | None = None) -> dict[str, gr.components.Component]:
    """A component per dataclass field (in field order, minus `exclude`), keyed by field name;
    `defaults` overrides the dataclass defaults shown in the form. Fields in `choices` are dropdowns
    (choices may be (label, value) pairs); those also in `custom_values` take a typed value too.
    With `basic`, the fields it names (or marked basic in their metadata) come first and the rest
    sit in a closed "Advanced settings" accordion (element id `{prefix}advanced`)."""
    shown = [f for f in dataclasses.fields(cls) if f.name not in exclude]
    if basic is None:
        return _components(cls, shown, choices, multiline, prefix, defaults, custom_values)
    first = [f for f in shown if f.name in basic or f.metadata.get("basic")]
    components = _components(cls, first, choices, multiline, prefix, defaults, custom_values)
    with gr.Accordion("Advanced settings", open=False, elem_id=f"{prefix}advanced"):
        rest = [f for f in shown if f not in first]
        components.update(_components(cls, rest, choices, multiline, prefix, defaults, custom_values))
    return {f.name: components[f.name] for f in shown}  # field order, as form_values and the launch expect


def _components(cls: type, shown: list, choices, multiline, prefix, defaults, custom_values) -> dict:
    choices = choices or {}
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    components: dict[str, gr.components.Component] = {}
    for f in shown:
        default = defaults.get(f.name, None if f.default is dataclasses.MISSING else f.default)
        common = {"label": field_label(f.name, cls), "info": f.metadata.get("help"), "elem_id": f"{prefix}{f.name}"}
        kind, optional = _base_type(hints[f.name])
        if optional and kind in (int, float):
            # A Number cannot be left empty (it hands back 0): an optional number is a textbox where
            # empty means None.
            common["info"] = f"{common['info'] or ''} (leave empty for none)".strip()
            components[f.name] = gr.Textbox(value="" if default is None else str(default), **common)
        elif f.name in choices or "choices" in f.metadata:
            options = choices.get(f.name, f.metadata.get("choices"))
            components[f.name] = gr.Dropdown(choices=list(options), value=default,
                                             allow_custom_value=f.name in custom_values, **common)
        elif kind is int:
            # No precision: Gradio would round 1.5 to 2 on the server; form_values refuses it instead.
            components[f.name] = gr.Number(value=default, step=1, **common)
        elif kind is float:
            components[f.name] = gr.Number(value=default, **common)
        elif kind is bool:
            components[f.name] = gr.Checkbox(value=bool(default), **common)
        else:
            components[f.name] = gr.Textbox(value=default or "", lines=4 if f.name in multiline else 1, **common)
    return components


def form_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Form values coerced to the fields' types (Gradio hands numbers back as floats, and an empty
    optional number as None); fields not in the form are left out."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        kind, optional = _base_type(hints[f.name])
        label = field_label(f.name, cls)
        if value in ("", None) and optional:
            value = None
        elif value in ("", None) and kind in (int, float):
            raise ValueError(f"{label} is empty: enter a {'whole number' if kind is int else 'number'}")
        elif kind is int:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{label} must be a whole number, not {value!r}") from None
            if not (math.isfinite(number) and number.is_integer()):
                raise ValueError(f"{label} must be a whole number, not {number:g}")
            value = int(number)
        elif kind is float:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{label} must be a number, not {value!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{label} must be a finite number, not {value:g}")
        out[f.name] = value
    return out


def readable_error(cls: type, message: str) -> str:
    """A config's validation message worded for the form's user: the field it names becomes the
    label they see, and "got X" becomes what they entered ("got None": left empty)."""
    message = re.sub(r"^invalid [\w-]+ settings: ", "", message)
    for name in sorted((f.name for f in dataclasses.fields(cls)), key=len, reverse=True):
        # Only where the name is the subject ("lr must ...", "loss='sigmoid'"), not a word in a sentence.
        message = re.sub(rf"\b{re.escape(name)}\b(?=( must| only| needs| is | cannot|=|\s*\())",
                         f"'{field_label(name, cls)}'", message)
    message = re.sub(r"an integer >= (-?\d+)", r"a whole number of at least \1", message)
    message = re.sub(r"(a finite number|a number|\b) ?> 0\b", " a number above 0", message).replace("  ", " ")
    message = message.replace(" or None", " or empty")
    message = re.sub(r">= (-?[\d.]+)", r"at least \1", message)
    message = re.sub(r",? got None\b", " (it was left empty)", message)
    message = re.sub(r",? got (.+?)(?=$|[;.] )", r" (you entered \1)", message)
    return message[:1].upper() + message[1:]


def read_form(cls: type, values: dict[str, Any]):
    """Instantiate the dataclass from form values (see `form_values`)."""
    return cls(**form_values(cls, values))


def fill_form(instance) -> list[Any]:
    """Field values in field order, to set a form's components from an existing config."""
    return [getattr(instance, f.name) for f in dataclasses.fields(instance)]
