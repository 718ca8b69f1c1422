"""Forms generated from config dataclasses: one component per field, labelled with its help text.

The same dataclass feeds the CLI, the UI form and the stored config, and its own validation runs
before anything is saved or launched, so the form cannot drift from what the code accepts.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

import gradio as gr


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def build_form(cls: type, choices: dict[str, list] | None = None, multiline: tuple[str, ...] = (),
               prefix: str = "", defaults: dict[str, Any] | None = None) -> dict[str, gr.components.Component]:
    """A component per dataclass field (in field order), keyed by field name; `defaults` overrides
    the dataclass defaults shown in the form."""
    choices = choices or {}
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    components: dict[str, gr.components.Component] = {}
    for f in dataclasses.fields(cls):
        default = defaults.get(f.name, None if f.default is dataclasses.MISSING else f.default)
        common = {"label": _label(f.name), "info": f.metadata.get("help"), "elem_id": f"{prefix}{f.name}"}
        kind = hints[f.name]
        if f.name in choices:
            components[f.name] = gr.Dropdown(choices=choices[f.name], value=default, **common)
        elif kind is int:
            components[f.name] = gr.Number(value=default, precision=0, **common)
        elif kind is float:
            components[f.name] = gr.Number(value=default, **common)
        elif kind is bool:
            components[f.name] = gr.Checkbox(value=bool(default), **common)
        else:
            components[f.name] = gr.Textbox(value=default or "", lines=4 if f.name in multiline else 1, **common)
    return components


def read_form(cls: type, values: dict[str, Any]):
    """Instantiate the dataclass from form values, coercing numbers (Gradio hands back floats)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        if hints[f.name] is int and value is not None:
            value = int(value)
        elif hints[f.name] is float and value is not None:
            value = float(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def fill_form(instance) -> list[Any]:
    """Field values in field order, to set a form's components from an existing config."""
    return [getattr(instance, f.name) for f in dataclasses.fields(instance)]
